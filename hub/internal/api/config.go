package api

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"

	"github.com/tetherfleet/tether/hub/internal/atomicfile"
)

// ClientConfig is the console's connection file, found the way kubectl
// finds a kubeconfig: --config, else $TETHER_CONFIG, else
// ~/.config/tether/config.yaml.
type ClientConfig struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Server is the console API URL, e.g. https://127.0.0.1:7443.
	Server string `json:"server"`
	// CertificateAuthority is the hub CA in PEM.
	CertificateAuthority string `json:"certificateAuthority"`
	Token                string `json:"token"`
}

const (
	configAPIVersion = "tether.dev/v1alpha1"
	configKind       = "Config"
	// EnvConfig names the environment variable that points at a config.
	EnvConfig = "TETHER_CONFIG"
)

// DefaultConfigPath returns where the console looks for its config when
// neither --config nor $TETHER_CONFIG is set.
func DefaultConfigPath() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return filepath.Join(".config", "tether", "config.yaml")
	}
	return filepath.Join(dir, "tether", "config.yaml")
}

// ResolveConfigPath applies the lookup order to an explicit flag value.
func ResolveConfigPath(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv(EnvConfig); env != "" {
		return env
	}
	return DefaultConfigPath()
}

// LoadClientConfig reads and checks a config file.
func LoadClientConfig(path string) (ClientConfig, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return ClientConfig{}, fmt.Errorf("console config %s does not exist: start a hub with `tether serve` and use the config it prints, or pass --config", path)
	}
	if err != nil {
		return ClientConfig{}, fmt.Errorf("read console config: %w", err)
	}
	var c ClientConfig
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return ClientConfig{}, fmt.Errorf("console config %s: %w", path, err)
	}
	switch {
	case c.Kind != configKind || c.APIVersion != configAPIVersion:
		return ClientConfig{}, fmt.Errorf("console config %s: want apiVersion %s kind %s, got %q %q", path, configAPIVersion, configKind, c.APIVersion, c.Kind)
	case c.Server == "":
		return ClientConfig{}, fmt.Errorf("console config %s: server is empty", path)
	case c.Token == "":
		return ClientConfig{}, fmt.Errorf("console config %s: token is empty", path)
	}
	if _, err := c.TLSConfig(); err != nil {
		return ClientConfig{}, fmt.Errorf("console config %s: %w", path, err)
	}
	return c, nil
}

// WriteClientConfig writes c to path with mode 0600, creating parent
// directories. The write is atomic and durable (file and directory are
// fsynced) when it returns nil.
func WriteClientConfig(path string, c ClientConfig) error {
	c.APIVersion, c.Kind = configAPIVersion, configKind
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write console config: %w", err)
	}
	if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write console config: %w", err)
	}
	return nil
}

// TLSConfig trusts only the hub CA in the config.
func (c ClientConfig) TLSConfig() (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.CertificateAuthority)) {
		return nil, errors.New("certificateAuthority holds no PEM certificate")
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}, nil
}
