package telemetry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/util/annotations"
)

// The JSON of the Prometheus HTTP API:
//
//	{"status":"success","data":...,"warnings":[...],"infos":[...]}
//	{"status":"error","errorType":"bad_data","error":"..."}
//
// A query's data is {"resultType":"vector|matrix|scalar|string","result":...};
// a sample's value is [<unix seconds>, "<value>"].

type response struct {
	Status    string   `json:"status"`
	Data      any      `json:"data,omitempty"`
	ErrorType string   `json:"errorType,omitempty"`
	Error     string   `json:"error,omitempty"`
	Warnings  []string `json:"warnings,omitempty"`
	Infos     []string `json:"infos,omitempty"`
}

// rawJSON is data already encoded.
type rawJSON []byte

func (r rawJSON) MarshalJSON() ([]byte, error) { return r, nil }

func writeSuccess(w http.ResponseWriter, data any, warns annotations.Annotations, query string) {
	resp := response{Status: "success", Data: data}
	resp.Warnings, resp.Infos = warns.AsStrings(query, maxWarnings, maxWarnings)
	b, err := json.Marshal(resp)
	if err != nil {
		WriteError(w, ErrorInternal, fmt.Errorf("encode answer: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// WriteError writes a Prometheus API error of type typ (ErrorBadData, ...)
// with the HTTP status Prometheus gives it.
func WriteError(w http.ResponseWriter, typ string, err error) {
	b, _ := json.Marshal(response{Status: "error", ErrorType: typ, Error: err.Error()})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(statusOf(typ))
	_, _ = w.Write(b)
}

// encodeValue encodes a query result as {"resultType":..,"result":..}.
func encodeValue(v parser.Value) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`{"resultType":`)
	appendString(&b, string(v.Type()))
	b.WriteString(`,"result":`)
	switch v := v.(type) {
	case promql.Vector:
		b.WriteByte('[')
		for i, s := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`{"metric":`)
			appendLabels(&b, s.Metric)
			if s.H != nil {
				return nil, fmt.Errorf("native histogram results are not supported (series %s)", s.Metric)
			}
			b.WriteString(`,"value":`)
			appendPoint(&b, s.T, s.F)
			b.WriteByte('}')
		}
		b.WriteByte(']')
	case promql.Matrix:
		b.WriteByte('[')
		for i, s := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			if len(s.Histograms) > 0 {
				return nil, fmt.Errorf("native histogram results are not supported (series %s)", s.Metric)
			}
			b.WriteString(`{"metric":`)
			appendLabels(&b, s.Metric)
			b.WriteString(`,"values":[`)
			for j, p := range s.Floats {
				if j > 0 {
					b.WriteByte(',')
				}
				appendPoint(&b, p.T, p.F)
			}
			b.WriteString(`]}`)
		}
		b.WriteByte(']')
	case promql.Scalar:
		appendPoint(&b, v.T, v.V)
	case promql.String:
		b.WriteByte('[')
		appendTime(&b, v.T)
		b.WriteByte(',')
		appendString(&b, v.V)
		b.WriteByte(']')
	default:
		return nil, fmt.Errorf("unexpected query result type %s", v.Type())
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func appendLabels(b *bytes.Buffer, ls labels.Labels) {
	b.WriteByte('{')
	first := true
	ls.Range(func(l labels.Label) {
		if !first {
			b.WriteByte(',')
		}
		first = false
		appendString(b, l.Name)
		b.WriteByte(':')
		appendString(b, l.Value)
	})
	b.WriteByte('}')
}

// appendPoint writes [<seconds>,"<value>"].
func appendPoint(b *bytes.Buffer, t int64, v float64) {
	b.WriteByte('[')
	appendTime(b, t)
	b.WriteString(`,"`)
	b.Write(strconv.AppendFloat(b.AvailableBuffer(), v, 'f', -1, 64))
	b.WriteString(`"]`)
}

// appendTime writes a millisecond timestamp as seconds: 1435781451.781.
func appendTime(b *bytes.Buffer, t int64) {
	if t < 0 {
		b.WriteByte('-')
		t = -t
	}
	b.Write(strconv.AppendInt(b.AvailableBuffer(), t/1000, 10))
	if ms := t % 1000; ms != 0 {
		frac := []byte{'.', byte('0' + ms/100), byte('0' + ms/10%10), byte('0' + ms%10)}
		for frac[len(frac)-1] == '0' {
			frac = frac[:len(frac)-1]
		}
		b.Write(frac)
	}
}

const hex = "0123456789abcdef"

// appendString writes s as a JSON string (invalid UTF-8 becomes U+FFFD).
func appendString(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b.WriteString(s[start:i])
			switch c {
			case '"', '\\':
				b.WriteByte('\\')
				b.WriteByte(c)
			case '\n':
				b.WriteString(`\n`)
			case '\r':
				b.WriteString(`\r`)
			case '\t':
				b.WriteString(`\t`)
			default:
				b.WriteString(`\u00`)
				b.WriteByte(hex[c>>4])
				b.WriteByte(hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteString(s[start:i])
			b.WriteString(`\ufffd`)
			i += size
			start = i
			continue
		}
		i += size
	}
	b.WriteString(s[start:])
	b.WriteByte('"')
}
