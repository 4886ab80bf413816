package e2etest

import (
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// GitServer is a git repository served over smart HTTP on loopback by
// `git http-backend` (the git binary is required: a test that needs it
// fails without it, never skips).
type GitServer struct {
	t    testing.TB
	dir  string // the work tree; its .git is served
	git  string
	URL  string // the repository's clone URL
	User string // basic-auth user and password, if NewGitServer was given them
	Pass string
}

// NewGitServer starts an empty repository (branch main) served on
// loopback until the test ends. With user and pass non-empty every
// request must carry them as basic auth.
func NewGitServer(t testing.TB, user, pass string) *GitServer {
	t.Helper()
	gitBin, err := exec.LookPath("git")
	if err != nil {
		t.Fatalf("git binary needed to serve a test repository: %v", err)
	}
	root := t.TempDir()
	g := &GitServer{t: t, dir: filepath.Join(root, "repo"), git: gitBin, User: user, Pass: pass}
	g.run("init", "-q", "-b", "main", g.dir)
	g.run("-C", g.dir, "config", "http.receivepack", "false")
	h := &cgi.Handler{
		Path: gitBin,
		Args: []string{"http-backend"},
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user != "" {
			if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	g.URL = srv.URL + "/repo/.git"
	return g
}

func (g *GitServer) run(args ...string) string {
	g.t.Helper()
	cmd := exec.Command(g.git, args...)
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_NOSYSTEM=1", "HOME="+filepath.Dir(g.dir))
	out, err := cmd.CombinedOutput()
	if err != nil {
		g.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Commit writes files (slash paths; a nil value removes the file) on the
// current branch, commits them and returns the commit's hash.
func (g *GitServer) Commit(files map[string]string) string {
	g.t.Helper()
	for p, data := range files {
		f := filepath.Join(g.dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			g.t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(data), 0o644); err != nil {
			g.t.Fatal(err)
		}
	}
	g.run("-C", g.dir, "add", "-A")
	g.run("-C", g.dir, "commit", "-q", "-m", "test commit")
	g.run("-C", g.dir, "update-server-info")
	return g.run("-C", g.dir, "rev-parse", "HEAD")
}

// Tag tags HEAD with an annotated tag.
func (g *GitServer) Tag(name string) {
	g.t.Helper()
	g.run("-C", g.dir, "tag", "-a", "-m", name, name)
}
