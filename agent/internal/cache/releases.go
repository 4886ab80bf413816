package cache

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// MaxRecordedRevisions bounds the revisions kept in one ReleaseRecord;
// the oldest go first. Helm keeps far fewer (apply's MaxHistory).
const MaxRecordedRevisions = 64

// ReleaseRecord is what the agent wrote of one Helm release. It is the
// only source of truth for which releases the agent owns: release
// Secrets on the cluster can be written by any tenant of the namespace.
type ReleaseRecord struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Revisions the agent wrote that may still be stored on the cluster,
	// ascending by Revision.
	Revisions []ReleaseRevision `json:"revisions"`
	Installed time.Time         `json:"installed"`
	Updated   time.Time         `json:"updated"`
	// Adopted: recorded by adoption after an upgrade from schema 1 (see
	// Adoption in the package comment), not by an install.
	Adopted bool `json:"adopted,omitempty"`
}

// ReleaseRevision is one revision of a release as the agent wrote it.
//
// Besides the digest that proves ownership, a revision carries what Helm
// stored in it, so the agent can answer "is this release up to date?",
// its health and its drift without Helm (package observe). Records written
// before these fields existed lack them; so does a revision whose write
// is under way or failed (Status ""): the reader then asks Helm.
type ReleaseRevision struct {
	Revision int `json:"revision"`
	// Digest is "sha256:<hex>" over the release's content as the agent
	// wrote it (manifest, hooks, chart, values; the apply package
	// defines it).
	Digest string `json:"digest"`
	// Chart is the digest of the chart archive in charts/, when known;
	// CollectCharts keeps it.
	Chart   string    `json:"chart,omitempty"`
	Written time.Time `json:"written"`

	// Status is Helm's status of the revision (deployed, failed,
	// superseded, pending-install, ...) as Helm last stored it: set only
	// after Helm's write of it succeeded, empty while a write is under way
	// or after one failed.
	Status string `json:"status,omitempty"`
	// Description is Helm's description of that status.
	Description string `json:"description,omitempty"`
	// Hash is the revision's tether.dev/hash label value.
	Hash string `json:"hash,omitempty"`
	// ChartName and ChartVersion are the chart's metadata.
	ChartName    string `json:"chartName,omitempty"`
	ChartVersion string `json:"chartVersion,omitempty"`
	// Deployed is Helm's last-deployed time of the revision.
	Deployed time.Time `json:"deployed,omitzero"`
	// ManifestGzip is the rendered manifest, gzip-compressed (see
	// SetManifest). Only the newest revision of a record keeps it; nil
	// when not recorded or larger than the bounds.
	ManifestGzip []byte `json:"manifestGzip,omitempty"`
}

// Bounds of a recorded manifest. Helm stores a whole release (chart
// included) in one Secret of at most 1 MiB, compressed, so real manifests
// stay far below them.
const (
	// MaxManifestBytes bounds a recorded manifest, compressed.
	MaxManifestBytes = 1 << 20
	// MaxManifestInflated bounds it uncompressed.
	MaxManifestInflated = 16 << 20
)

// SetManifest records manifest, compressed. A manifest over the bounds is
// not recorded (ManifestGzip becomes nil) and the error wraps ErrTooLarge.
func (v *ReleaseRevision) SetManifest(manifest string) error {
	v.ManifestGzip = nil
	if len(manifest) > MaxManifestInflated {
		return fmt.Errorf("cache: manifest of revision %d: %w: %d bytes, at most %d", v.Revision, ErrTooLarge, len(manifest), MaxManifestInflated)
	}
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(zw, manifest); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if buf.Len() > MaxManifestBytes {
		return fmt.Errorf("cache: manifest of revision %d: %w: %d bytes compressed, at most %d", v.Revision, ErrTooLarge, buf.Len(), MaxManifestBytes)
	}
	v.ManifestGzip = buf.Bytes()
	return nil
}

// Manifest returns the recorded manifest. It fails with ErrNotFound when
// none is recorded, and with ErrInvalid when the recorded bytes are not a
// gzip stream within the bounds.
func (v ReleaseRevision) Manifest() (string, error) {
	return inflateManifest(v.Revision, v.ManifestGzip)
}

func inflateManifest(rev int, gz []byte) (string, error) {
	if gz == nil {
		return "", fmt.Errorf("cache: manifest of revision %d: %w", rev, ErrNotFound)
	}
	if len(gz) > MaxManifestBytes {
		return "", fmt.Errorf("cache: manifest of revision %d: %w: %d bytes compressed, at most %d", rev, ErrInvalid, len(gz), MaxManifestBytes)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return "", fmt.Errorf("cache: manifest of revision %d: %w: %v", rev, ErrInvalid, err)
	}
	var out strings.Builder
	n, err := io.Copy(&out, io.LimitReader(zr, MaxManifestInflated+1))
	if err != nil {
		return "", fmt.Errorf("cache: manifest of revision %d: %w: %v", rev, ErrInvalid, err)
	}
	if n > MaxManifestInflated {
		return "", fmt.Errorf("cache: manifest of revision %d: %w: more than %d bytes uncompressed", rev, ErrInvalid, MaxManifestInflated)
	}
	return out.String(), nil
}

// Revision returns the recorded revision rev.
func (r ReleaseRecord) Revision(rev int) (ReleaseRevision, bool) {
	for _, v := range r.Revisions {
		if v.Revision == rev {
			return v, true
		}
	}
	return ReleaseRevision{}, false
}

// Latest returns the newest recorded revision: the one Helm reads as the
// release's current state.
func (r ReleaseRecord) Latest() (ReleaseRevision, bool) {
	if len(r.Revisions) == 0 {
		return ReleaseRevision{}, false
	}
	return r.Revisions[len(r.Revisions)-1], true
}

func releaseKey(namespace, name string) (string, error) {
	if namespace == "" || name == "" || strings.Contains(namespace, "/") || strings.Contains(name, "/") {
		return "", fmt.Errorf("%w: release %q in namespace %q: both must be non-empty and without '/'", ErrInvalid, name, namespace)
	}
	return namespace + "/" + name, nil
}

// SaveReleaseRecord stores r, replacing the record of the same release.
func (c *Cache) SaveReleaseRecord(r ReleaseRecord) error {
	op := fmt.Sprintf("save release record %s/%s", r.Namespace, r.Name)
	k, err := releaseKey(r.Namespace, r.Name)
	if err != nil {
		return fmt.Errorf("cache: %s: %w", op, err)
	}
	for i, v := range r.Revisions {
		if v.Revision <= 0 || (i > 0 && v.Revision <= r.Revisions[i-1].Revision) {
			return fmt.Errorf("cache: %s: %w: revisions must be positive and ascending, got %d at index %d", op, ErrInvalid, v.Revision, i)
		}
		if v.Digest == "" {
			return fmt.Errorf("cache: %s: %w: revision %d has no digest", op, ErrInvalid, v.Revision)
		}
		if len(v.ManifestGzip) > MaxManifestBytes {
			return fmt.Errorf("cache: %s: %w: revision %d: manifest of %d bytes compressed, at most %d", op, ErrInvalid, v.Revision, len(v.ManifestGzip), MaxManifestBytes)
		}
	}
	if n := len(r.Revisions) - MaxRecordedRevisions; n > 0 {
		r.Revisions = r.Revisions[n:]
	}
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("cache: %s: %w", op, err)
	}
	return c.update(op, func(tx *bolt.Tx) error { return bucket(tx, bucketReleases).Put([]byte(k), data) })
}

// ReleaseRecord returns the record of one release, or ErrNotFound.
func (c *Cache) ReleaseRecord(namespace, name string) (ReleaseRecord, error) {
	op := fmt.Sprintf("read release record %s/%s", namespace, name)
	k, err := releaseKey(namespace, name)
	if err != nil {
		return ReleaseRecord{}, fmt.Errorf("cache: %s: %w", op, err)
	}
	var r ReleaseRecord
	err = c.view(op, func(tx *bolt.Tx) error {
		data := bucket(tx, bucketReleases).Get([]byte(k))
		if data == nil {
			return fmt.Errorf("cache: %s: %w", op, ErrNotFound)
		}
		return json.Unmarshal(data, &r)
	})
	return r, err
}

// DeleteReleaseRecord forgets a release. Forgetting an unknown one is not
// an error.
func (c *Cache) DeleteReleaseRecord(namespace, name string) error {
	op := fmt.Sprintf("delete release record %s/%s", namespace, name)
	k, err := releaseKey(namespace, name)
	if err != nil {
		return fmt.Errorf("cache: %s: %w", op, err)
	}
	return c.update(op, func(tx *bolt.Tx) error { return bucket(tx, bucketReleases).Delete([]byte(k)) })
}

// ReleaseRecords returns every release record, sorted by namespace and
// name.
func (c *Cache) ReleaseRecords() ([]ReleaseRecord, error) {
	var out []ReleaseRecord
	err := c.view("list release records", func(tx *bolt.Tx) error {
		return bucket(tx, bucketReleases).ForEach(func(k, v []byte) error {
			var r ReleaseRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("cache: release record %q: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// PendingAdoption returns the desired revision whose releases may be
// adopted, when the file was upgraded from schema 1 and EndAdoption has not
// run since (see Adoption in the package comment).
func (c *Cache) PendingAdoption() (rev uint64, pending bool, err error) {
	err = c.view("read pending adoption", func(tx *bolt.Tx) error {
		v := bucket(tx, bucketMeta).Get([]byte(keyAdopt))
		rev, pending = decodeUint(v), v != nil
		return nil
	})
	return rev, pending, err
}

// EndAdoption records that adoption ran; PendingAdoption reports nothing
// from then on.
func (c *Cache) EndAdoption() error {
	return c.update("end adoption", func(tx *bolt.Tx) error { return bucket(tx, bucketMeta).Delete([]byte(keyAdopt)) })
}

// DesiredRevisions returns the stored desired revisions, ascending.
func (c *Cache) DesiredRevisions() ([]uint64, error) {
	var out []uint64
	err := c.view("list desired revisions", func(tx *bolt.Tx) error {
		return bucket(tx, bucketDesired).ForEach(func(k, _ []byte) error {
			if len(k) == 8 {
				out = append(out, binary.BigEndian.Uint64(k))
			}
			return nil
		})
	})
	return out, err
}

// CollectCharts deletes every chart archive that is neither in keep nor
// referenced by a release record, and returns the digests it deleted.
func (c *Cache) CollectCharts(keep []string) (removed []string, err error) {
	err = c.update("collect charts", func(tx *bolt.Tx) error {
		need := map[string]bool{}
		for _, d := range keep {
			need[d] = true
		}
		err := bucket(tx, bucketReleases).ForEach(func(k, v []byte) error {
			var r ReleaseRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("cache: release record %q: %w", k, err)
			}
			for _, rv := range r.Revisions {
				if rv.Chart != "" {
					need[rv.Chart] = true
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		b := bucket(tx, bucketCharts)
		var drop [][]byte
		if err := b.ForEach(func(k, _ []byte) error {
			if !need[string(k)] {
				drop = append(drop, slices.Clone(k))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range drop {
			if err := b.Delete(k); err != nil {
				return err
			}
			removed = append(removed, string(k))
		}
		return nil
	})
	if err != nil {
		removed = nil
	}
	return removed, err
}
