package objects

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"
)

// MaxRolloutPolicyBytes bounds a rollout policy file.
const MaxRolloutPolicyBytes = 1 << 20

// ParseRolloutPolicy decodes a hub-wide rollout policy, the file of
// `tether serve --cluster-deployment-rollout`: one YAML (or JSON)
// document holding a rollout block with MultiClusterService
// spec.rollout's fields, defaults and validation, either under a
// top-level "rollout:" key or at the top level itself. Errors name the
// source and the field (`policy.yaml: rollout.maxConcurrency: ...`) and
// wrap ErrInvalid.
func ParseRolloutPolicy(data []byte, source string) (*Rollout, error) {
	fail := func(format string, args ...any) error {
		return policyError(source + ": " + fmt.Sprintf(format, args...))
	}
	if len(data) > MaxRolloutPolicyBytes {
		return nil, fail("larger than %d bytes", MaxRolloutPolicyBytes)
	}
	if isBlankYAML(data) {
		return nil, fail("empty: want a rollout block (strategy, maxConcurrency, ...)")
	}
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fail("%s", strings.TrimPrefix(err.Error(), "error converting YAML to JSON: "))
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(j, &top); err != nil {
		return nil, fail("want a mapping holding a rollout block")
	}
	at := path("")
	if inner, ok := top["rollout"]; ok {
		if len(top) > 1 {
			for k := range top {
				if k != "rollout" {
					return nil, fail("%s: unknown field (the file holds one rollout block)", k)
				}
			}
		}
		j, at = inner, "rollout"
	}
	var r Rollout
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		msg := strings.TrimPrefix(err.Error(), "json: ")
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			msg = fmt.Sprintf("%s: want %s", at.child(te.Field), te.Type)
		} else if at != "" {
			msg = string(at) + ": " + msg
		}
		return nil, fail("%s", msg)
	}
	if dec.More() {
		return nil, fail("more than one value")
	}
	r.setDefaults()
	var errs FieldErrors
	validateRollout(&r, at, &errs)
	if len(errs) > 0 {
		lines := make([]string, 0, len(errs))
		for _, e := range errs {
			lines = append(lines, source+": "+e.Error())
		}
		return nil, policyError(strings.Join(lines, "\n"))
	}
	return &r, nil
}

// policyError is a refused policy file; it matches ErrInvalid.
type policyError string

func (e policyError) Error() string { return string(e) }
func (e policyError) Unwrap() error { return ErrInvalid }
