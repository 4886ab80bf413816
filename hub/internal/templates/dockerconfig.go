package templates

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
)

// DockerConfigKey is the key of a kubernetes.io/dockerconfigjson Secret,
// which Flux accepts as the secretRef of an OCI HelmRepository.
const DockerConfigKey = ".dockerconfigjson"

// dockerLogin returns the username and password that a Docker config
// (untrusted JSON from a Secret) holds for registry host (host:port).
// Entries may be written as "host", "https://host" or "host/path".
// Errors never quote the secret.
func dockerLogin(data []byte, host string) (user, pass string, err error) {
	var cfg struct {
		Auths map[string]struct {
			Username string `json:"username"`
			Password string `json:"password"`
			Auth     string `json:"auth"`
		} `json:"auths"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return "", "", fmt.Errorf("key %q is not a Docker config: invalid JSON", DockerConfigKey)
	}
	for k, a := range cfg.Auths {
		h := strings.TrimPrefix(strings.TrimPrefix(k, "https://"), "http://")
		h, _, _ = strings.Cut(h, "/")
		if !strings.EqualFold(h, host) {
			continue
		}
		if a.Username != "" || a.Password != "" {
			return a.Username, a.Password, nil
		}
		raw, err := base64.StdEncoding.DecodeString(a.Auth)
		if err != nil {
			return "", "", fmt.Errorf("key %q: auths[%q].auth is not base64", DockerConfigKey, k)
		}
		u, p, ok := strings.Cut(string(raw), ":")
		if !ok {
			return "", "", fmt.Errorf("key %q: auths[%q].auth is not username:password", DockerConfigKey, k)
		}
		return u, p, nil
	}
	return "", "", fmt.Errorf("key %q has no auths entry for %s", DockerConfigKey, host)
}
