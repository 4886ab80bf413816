package worker

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/tetherfleet/tether/agent/internal/cache"
	workerv1 "github.com/tetherfleet/tether/protocol/worker/v1"
)

// Records is the agent's record of the releases it owns (the cache).
type Records interface {
	ReleaseRecord(namespace, name string) (cache.ReleaseRecord, error)
	SaveReleaseRecord(r cache.ReleaseRecord) error
	DeleteReleaseRecord(namespace, name string) error
	ReleaseRecords() ([]cache.ReleaseRecord, error)
}

// recordsServer serves the agent's records to its worker. The worker is
// the agent's own child, but what it sends is still decoded defensively:
// the cache validates every record before it is stored.
type recordsServer struct {
	workerv1.UnimplementedRecordsServer
	records Records
}

func (r *recordsServer) GetRecord(_ context.Context, ref *workerv1.ReleaseRef) (*workerv1.RecordResponse, error) {
	rec, err := r.records.ReleaseRecord(ref.GetNamespace(), ref.GetName())
	if err != nil {
		return &workerv1.RecordResponse{Error: errorToProto(err)}, nil
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return &workerv1.RecordResponse{Error: errorToProto(err)}, nil
	}
	return &workerv1.RecordResponse{Record: &workerv1.Record{Json: b}}, nil
}

func (r *recordsServer) SaveRecord(_ context.Context, in *workerv1.Record) (*workerv1.SaveRecordResponse, error) {
	rec, err := decodeRecord(in.GetJson())
	if err == nil {
		err = r.records.SaveReleaseRecord(rec)
	}
	return &workerv1.SaveRecordResponse{Error: errorToProto(err)}, nil
}

func (r *recordsServer) DeleteRecord(_ context.Context, ref *workerv1.ReleaseRef) (*workerv1.DeleteRecordResponse, error) {
	return &workerv1.DeleteRecordResponse{Error: errorToProto(r.records.DeleteReleaseRecord(ref.GetNamespace(), ref.GetName()))}, nil
}

func (r *recordsServer) ListRecords(context.Context, *workerv1.ListRequest) (*workerv1.RecordList, error) {
	recs, err := r.records.ReleaseRecords()
	if err != nil {
		return &workerv1.RecordList{Error: errorToProto(err)}, nil
	}
	out := &workerv1.RecordList{Records: make([]*workerv1.Record, 0, len(recs))}
	for _, rec := range recs {
		b, err := json.Marshal(rec)
		if err != nil {
			return &workerv1.RecordList{Error: errorToProto(err)}, nil
		}
		out.Records = append(out.Records, &workerv1.Record{Json: b})
	}
	return out, nil
}

// decodeRecord parses a record sent by the other side.
func decodeRecord(b []byte) (cache.ReleaseRecord, error) {
	var rec cache.ReleaseRecord
	if len(b) == 0 {
		return rec, fmt.Errorf("%w: empty release record", cache.ErrInvalid)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("%w: release record from the helm worker: %v", cache.ErrInvalid, err)
	}
	return rec, nil
}

// RemoteRecords is the worker's view of the agent's records: every call
// is a round trip to the agent, which holds the bbolt file.
type RemoteRecords struct {
	client workerv1.RecordsClient
}

// ReleaseRecord implements apply.Records.
func (r RemoteRecords) ReleaseRecord(namespace, name string) (cache.ReleaseRecord, error) {
	resp, err := r.client.GetRecord(context.Background(), &workerv1.ReleaseRef{Namespace: namespace, Name: name})
	if err != nil {
		return cache.ReleaseRecord{}, fmt.Errorf("read release record %s/%s from the agent: %w", namespace, name, err)
	}
	if err := errorFromProto(resp.GetError()); err != nil {
		return cache.ReleaseRecord{}, err
	}
	return decodeRecord(resp.GetRecord().GetJson())
}

// SaveReleaseRecord implements apply.Records.
func (r RemoteRecords) SaveReleaseRecord(rec cache.ReleaseRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	resp, err := r.client.SaveRecord(context.Background(), &workerv1.Record{Json: b})
	if err != nil {
		return fmt.Errorf("save release record %s/%s in the agent: %w", rec.Namespace, rec.Name, err)
	}
	return errorFromProto(resp.GetError())
}

// DeleteReleaseRecord implements apply.Records.
func (r RemoteRecords) DeleteReleaseRecord(namespace, name string) error {
	resp, err := r.client.DeleteRecord(context.Background(), &workerv1.ReleaseRef{Namespace: namespace, Name: name})
	if err != nil {
		return fmt.Errorf("delete release record %s/%s in the agent: %w", namespace, name, err)
	}
	return errorFromProto(resp.GetError())
}

// ReleaseRecords implements apply.Records.
func (r RemoteRecords) ReleaseRecords() ([]cache.ReleaseRecord, error) {
	resp, err := r.client.ListRecords(context.Background(), &workerv1.ListRequest{})
	if err != nil {
		return nil, fmt.Errorf("list release records from the agent: %w", err)
	}
	if err := errorFromProto(resp.GetError()); err != nil {
		return nil, err
	}
	out := make([]cache.ReleaseRecord, 0, len(resp.GetRecords()))
	for _, rr := range resp.GetRecords() {
		rec, err := decodeRecord(rr.GetJson())
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}
