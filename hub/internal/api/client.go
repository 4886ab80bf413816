package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tetherfleet/tether/hub/internal/charts"
	"github.com/tetherfleet/tether/hub/internal/fleet"
)

// Client calls the console API.
type Client struct {
	cfg  ClientConfig
	http *http.Client
}

// NewClient returns a Client for cfg.
func NewClient(cfg ClientConfig) (*Client, error) {
	tc, err := cfg.TLSConfig()
	if err != nil {
		return nil, err
	}
	return &Client{cfg: cfg, http: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true},
	}}, nil
}

// StatusError is a non-2xx answer from the hub.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string { return e.Message }

// IsNotFound reports whether err is a 404 from the hub.
func IsNotFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	if in == nil {
		return c.doRaw(ctx, method, path, "", nil, out)
	}
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.doRaw(ctx, method, path, "application/json", b, out)
}

func (c *Client) doRaw(ctx context.Context, method, path, contentType string, in []byte, out any) error {
	var body io.Reader
	if in != nil {
		body = bytes.NewReader(in)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.cfg.Server, "/")+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("hub %s: %w", c.cfg.Server, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e Error
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		if json.Unmarshal(b, &e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(b))
		}
		return &StatusError{Code: resp.StatusCode, Message: e.Message}
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out); err != nil {
		return fmt.Errorf("decode answer to %s %s: %w", method, path, err)
	}
	return nil
}

// Version returns the hub's version.
func (c *Client) Version(ctx context.Context) (VersionInfo, error) {
	var v VersionInfo
	return v, c.do(ctx, http.MethodGet, "/v1/version", nil, &v)
}

// Clusters lists the fleet.
func (c *Client) Clusters(ctx context.Context) ([]Cluster, error) {
	var cs []Cluster
	return cs, c.do(ctx, http.MethodGet, "/v1/clusters", nil, &cs)
}

// Cluster returns one cluster; diagnose asks its agent too.
func (c *Client) Cluster(ctx context.Context, name string, diagnose bool) (Cluster, error) {
	var cl Cluster
	p := "/v1/clusters/" + url.PathEscape(name)
	if diagnose {
		p += "?diagnose=true"
	}
	return cl, c.do(ctx, http.MethodGet, p, nil, &cl)
}

// DeleteCluster deletes a cluster and revokes its agent.
func (c *Client) DeleteCluster(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/clusters/"+url.PathEscape(name), nil, nil)
}

// LabelCluster merges labels; an empty value removes a key.
func (c *Client) LabelCluster(ctx context.Context, name string, labels map[string]string) (Cluster, error) {
	var cl Cluster
	return cl, c.do(ctx, http.MethodPatch, "/v1/clusters/"+url.PathEscape(name)+"/labels", labels, &cl)
}

// CreateToken creates a join token.
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (fleet.TokenInfo, error) {
	var t fleet.TokenInfo
	return t, c.do(ctx, http.MethodPost, "/v1/tokens", req, &t)
}

// Apply sends one file's documents; they are applied atomically.
func (c *Client) Apply(ctx context.Context, source string, data []byte) ([]ApplyResult, error) {
	var out []ApplyResult
	return out, c.doRaw(ctx, http.MethodPost, "/v1/apply?source="+url.QueryEscape(source), "application/yaml", data, &out)
}

// DryRunApply sends one file's documents to be applied with nothing
// stored: the results say what apply would do, and carry the objects as
// apply would store them and as they are stored.
func (c *Client) DryRunApply(ctx context.Context, source string, data []byte) ([]ApplyResult, error) {
	var out []ApplyResult
	return out, c.doRaw(ctx, http.MethodPost, "/v1/apply?dryRun="+DryRunAll+"&source="+url.QueryEscape(source), "application/yaml", data, &out)
}

// Objects lists objects of a kind; namespace "" means all namespaces.
func (c *Client) Objects(ctx context.Context, kind, namespace string) ([]json.RawMessage, error) {
	var out []json.RawMessage
	p := "/v1/objects/" + url.PathEscape(kind)
	if namespace != "" {
		p += "?namespace=" + url.QueryEscape(namespace)
	}
	return out, c.do(ctx, http.MethodGet, p, nil, &out)
}

// Object returns one object.
func (c *Client) Object(ctx context.Context, kind, namespace, name string) (json.RawMessage, error) {
	var out json.RawMessage
	return out, c.do(ctx, http.MethodGet, objectPath(kind, namespace, name), nil, &out)
}

// DeleteObject deletes one object.
func (c *Client) DeleteObject(ctx context.Context, kind, namespace, name string) error {
	return c.do(ctx, http.MethodDelete, objectPath(kind, namespace, name), nil, nil)
}

func objectPath(kind, namespace, name string) string {
	return "/v1/objects/" + url.PathEscape(kind) + "/" + url.PathEscape(namespace) + "/" + url.PathEscape(name)
}

// PushChart uploads a chart archive.
func (c *Client) PushChart(ctx context.Context, archive []byte) (charts.Chart, error) {
	var out charts.Chart
	return out, c.doRaw(ctx, http.MethodPost, "/v1/charts", "application/gzip", archive, &out)
}

// Charts lists the hub's charts.
func (c *Client) Charts(ctx context.Context) ([]charts.Chart, error) {
	var out []charts.Chart
	return out, c.do(ctx, http.MethodGet, "/v1/charts", nil, &out)
}

// Services lists services per cluster; cluster "" means all.
func (c *Client) Services(ctx context.Context, cluster string) ([]Service, error) {
	var out []Service
	p := "/v1/services"
	if cluster != "" {
		p += "?cluster=" + url.QueryEscape(cluster)
	}
	return out, c.do(ctx, http.MethodGet, p, nil, &out)
}

// CreateUser creates a console user and returns its token (shown once).
func (c *Client) CreateUser(ctx context.Context, name string, role Role) (UserToken, error) {
	var out UserToken
	return out, c.do(ctx, http.MethodPost, "/v1/users", UserRequest{Name: name, Role: string(role)}, &out)
}

// RevokeUser deletes a console user; its token is refused at once. force
// allows revoking the last admin.
func (c *Client) RevokeUser(ctx context.Context, name string, force bool) (RevokedUser, error) {
	var out RevokedUser
	p := "/v1/users/" + url.PathEscape(name)
	if force {
		p += "?force=true"
	}
	return out, c.do(ctx, http.MethodDelete, p, nil, &out)
}
