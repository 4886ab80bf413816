package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/repo"
)

// helmRepo packages chart directories into a Helm repository (index.yaml
// and archives) under dir/helm-repo, serves it on addr until SIGINT or
// SIGTERM, and writes its URL to dir/helm-repo.url. The demo uses it as
// the chart repository k0rdent manifests name.
func helmRepo(log *slog.Logger, dir, addr string, chartDirs []string) error {
	out := filepath.Join(dir, "helm-repo")
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, d := range chartDirs {
		ch, err := loader.LoadDir(d)
		if err != nil {
			return fmt.Errorf("load chart %s: %w", d, err)
		}
		if _, err := chartutil.Save(ch, out); err != nil {
			return fmt.Errorf("package chart %s: %w", d, err)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	url := "http://" + ln.Addr().String()
	idx, err := repo.IndexDirectory(out, url)
	if err != nil {
		return err
	}
	if err := idx.WriteFile(filepath.Join(out, "index.yaml"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "helm-repo.url"), []byte(url+"\n"), 0o644); err != nil {
		return err
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(out)), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("helm repository ready", "url", url, "charts", len(chartDirs))
	select {
	case <-ctx.Done():
		_ = srv.Close()
		<-errc
		return nil
	case err := <-errc:
		return err
	}
}
