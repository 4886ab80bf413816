package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherfleet/tether/hub/internal/fleet"
	"github.com/tetherfleet/tether/hub/internal/pki"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// maxCSRSize bounds a certificate signing request; real ones are < 1 KiB.
const maxCSRSize = 16 << 10

func clusterOf(cert *x509.Certificate) (string, error) { return pki.ClusterFromCert(cert) }

type enrollment struct {
	fleetv1.UnimplementedEnrollmentServer
	g *Gateway
}

func (e *enrollment) Enroll(ctx context.Context, req *fleetv1.EnrollRequest) (*fleetv1.EnrollResponse, error) {
	g := e.g
	id := identityFrom(ctx)
	if len(req.GetCsrDer()) == 0 || len(req.GetCsrDer()) > maxCSRSize {
		return nil, status.Errorf(codes.InvalidArgument, "enroll: csr_der must be 1..%d bytes, got %d", maxCSRSize, len(req.GetCsrDer()))
	}
	if err := checkAgentInfo("enroll", req.GetAgentVersion(), ""); err != nil {
		return nil, err
	}
	now := g.cfg.Now()
	sign := func(cluster string) (fleet.Issued, error) {
		return g.sign(req.GetCsrDer(), cluster, now)
	}
	info := fleet.AgentInfo{Version: req.GetAgentVersion(), Address: id.remote}
	if csr, err := x509.ParseCertificateRequest(req.GetCsrDer()); err == nil {
		// A retry with the same key (the answer was lost) gets the same
		// certificate instead of a used-up token.
		sum := sha256.Sum256(csr.RawSubjectPublicKeyInfo)
		info.KeyID = hex.EncodeToString(sum[:])
	}
	cluster, issued, err := g.cfg.Registry.Enroll(ctx, req.GetToken(), info, sign)
	if err != nil {
		g.log.Info("enrolment refused", "remote", id.remote, "err", err)
		return nil, status.Error(enrollCode(err), err.Error())
	}
	// The new enrolment revoked the cluster's older certificates: end the
	// connections still using them.
	g.Disconnect(cluster)
	ca := g.cfg.Certificate.Certificate[len(g.cfg.Certificate.Certificate)-1]
	return &fleetv1.EnrollResponse{
		Cluster:        cluster,
		CertificateDer: issued.CertDER,
		CaDer:          ca,
		NotAfter:       timestamppb.New(issued.NotAfter),
	}, nil
}

func enrollCode(err error) codes.Code {
	switch {
	case errors.Is(err, fleet.ErrTokenInvalid), errors.Is(err, fleet.ErrTokenExpired), errors.Is(err, fleet.ErrTokenUsedUp):
		return codes.PermissionDenied
	case errors.Is(err, pki.ErrInvalidCSR), errors.Is(err, pki.ErrWeakKey):
		return codes.InvalidArgument
	}
	return codes.Internal
}

func (g *Gateway) sign(csr []byte, cluster string, now time.Time) (fleet.Issued, error) {
	der, notAfter, err := g.cfg.Signer.SignAgentCSR(csr, cluster, g.cfg.CertTTL, now)
	if err != nil {
		return fleet.Issued{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fleet.Issued{}, fmt.Errorf("parse issued certificate: %w", err)
	}
	return fleet.Issued{CertDER: der, Serial: cert.SerialNumber.Text(16), NotAfter: notAfter}, nil
}

type fleetService struct {
	fleetv1.UnimplementedFleetServer
	g *Gateway
}

func (f *fleetService) Renew(ctx context.Context, req *fleetv1.RenewRequest) (*fleetv1.RenewResponse, error) {
	g := f.g
	id := identityFrom(ctx)
	if len(req.GetCsrDer()) == 0 || len(req.GetCsrDer()) > maxCSRSize {
		return nil, status.Errorf(codes.InvalidArgument, "renew: csr_der must be 1..%d bytes, got %d", maxCSRSize, len(req.GetCsrDer()))
	}
	now := g.cfg.Now()
	issued, err := g.cfg.Registry.Renew(ctx, id.cluster, id.serial, func(cluster string) (fleet.Issued, error) {
		return g.sign(req.GetCsrDer(), cluster, now)
	})
	if err != nil {
		code := codes.Internal
		switch {
		case errors.Is(err, fleet.ErrRevoked), errors.Is(err, fleet.ErrNotFound):
			code = codes.PermissionDenied
		case errors.Is(err, pki.ErrInvalidCSR), errors.Is(err, pki.ErrWeakKey):
			code = codes.InvalidArgument
		}
		return nil, status.Error(code, err.Error())
	}
	return &fleetv1.RenewResponse{CertificateDer: issued.CertDER, NotAfter: timestamppb.New(issued.NotAfter)}, nil
}

// Sync is the agent's long-lived stream. The first message must be a Hello
// naming the cluster of the caller's certificate; the cluster counts as
// connected until the stream ends.
func (f *fleetService) Sync(stream fleetv1.Fleet_SyncServer) error {
	g := f.g
	ctx := stream.Context()
	id := identityFrom(ctx)
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Errorf(codes.InvalidArgument, "sync: first message must be hello, got %T", first.GetMsg())
	}
	if hello.GetCluster() != id.cluster {
		g.log.Warn("agent asked for another cluster's state", "cluster", id.cluster, "asked", hello.GetCluster(), "remote", id.remote)
		return status.Errorf(codes.PermissionDenied, "sync: certificate is for cluster %q, not %q", id.cluster, hello.GetCluster())
	}
	if err := checkAgentInfo("sync: hello", hello.GetAgentVersion(), hello.GetHostname()); err != nil {
		return err
	}
	kinds, err := g.negotiateKinds(hello.GetPayloadKinds())
	if err != nil {
		return err
	}
	now := g.cfg.Now()
	s := &agentSession{
		cluster: id.cluster, sess: id.sess, remote: id.remote, since: now, lastBeat: now, lastSaved: now,
		version: hello.GetAgentVersion(), hostname: hello.GetHostname(), revision: hello.GetHaveRevision(),
		payloadKinds: kinds,
	}
	apiServer, ok := apiServerOf(hello.GetApiServer())
	if !ok {
		g.log.Warn("agent reported an unusable kube-apiserver URL; ignored", "cluster", id.cluster, "len", len(hello.GetApiServer()))
	}
	g.noteSeen(id.cluster, fleet.AgentInfo{Version: s.version, Hostname: s.hostname, Address: s.remote, APIServer: apiServer})
	g.register(s)
	g.log.Info("agent connected", "cluster", id.cluster, "remote", id.remote, "version", s.version, "revision", s.revision)
	defer func() {
		g.unregister(s)
		g.noteSeen(id.cluster, fleet.AgentInfo{})
		g.log.Info("agent disconnected", "cluster", id.cluster, "remote", id.remote)
	}()
	out := &hubSender{stream: stream}
	var epoch string
	if e, ok := g.cfg.Desired.(interface {
		Epoch(context.Context) (string, error)
	}); ok {
		epoch, _ = e.Epoch(ctx) // informational; DesiredState carries it too
	}
	err = out.send(&fleetv1.HubMessage{Msg: &fleetv1.HubMessage_Welcome{Welcome: &fleetv1.Welcome{
		Cluster:          id.cluster,
		ServerTime:       timestamppb.New(now),
		HeartbeatSeconds: uint32(g.cfg.Heartbeat / time.Second),
		Epoch:            epoch,
		PayloadKinds:     kinds,
		Features:         g.cfg.Features,
	}}})
	if err != nil {
		return err
	}
	if g.cfg.Desired != nil {
		// Subscribe before the first delta so no change falls in between.
		p := &pusher{g: g, out: out, cluster: id.cluster, have: hello.GetHaveRevision(), haveEpoch: hello.GetHaveEpoch(), ctx: ctx}
		unsubscribe := g.cfg.Desired.SubscribeFunc(id.cluster, p.kick)
		defer p.stop()
		defer unsubscribe()
		p.kick()
	}
	return g.receive(ctx, stream, out, s)
}

// hubSender serialises Send on a sync stream: the push loop and the
// receive loop (status acks) both send.
type hubSender struct {
	mu     sync.Mutex
	stream fleetv1.Fleet_SyncServer
}

func (h *hubSender) send(m *fleetv1.HubMessage) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stream.Send(m)
}

// pusher sends an agent what is newer than the revision it has, at once
// and after every change. It runs a goroutine only while there is something
// to send, so thousands of idle agents park none.
type pusher struct {
	g       *Gateway
	out     *hubSender
	cluster string
	ctx     context.Context

	mu        sync.Mutex
	have      uint64
	haveEpoch string
	running   bool // a send goroutine runs
	dirty     bool // a change arrived while it ran
	stopped   bool
	retry     *time.Timer
	wg        sync.WaitGroup
}

// kick asks for a push; it never blocks (it runs under the compiler's lock).
func (p *pusher) kick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	if p.running {
		p.dirty = true
		return
	}
	p.running = true
	p.wg.Go(p.run)
}

func (p *pusher) run() {
	for {
		p.mu.Lock()
		p.dirty = false
		have, haveEpoch := p.have, p.haveEpoch
		p.mu.Unlock()
		ds, err := p.g.cfg.Desired.Delta(p.ctx, p.cluster, have, haveEpoch)
		switch {
		case err != nil && p.ctx.Err() == nil:
			p.g.log.Warn("desired state delta; will retry", "cluster", p.cluster, "err", err)
			p.mu.Lock()
			if !p.stopped && p.retry == nil {
				p.retry = time.AfterFunc(5*time.Second, func() {
					p.mu.Lock()
					p.retry = nil
					p.mu.Unlock()
					p.kick()
				})
			}
			p.mu.Unlock()
		case ds != nil:
			if err := p.out.send(&fleetv1.HubMessage{Msg: &fleetv1.HubMessage_Desired{Desired: ds}}); err != nil {
				// The stream is broken; the receive loop ends the call.
				p.mu.Lock()
				p.running = false
				p.mu.Unlock()
				return
			}
			p.g.log.Info("desired state sent", "cluster", p.cluster, "revision", ds.GetRevision(), "from", have, "full", ds.GetFull(), "services", len(ds.GetServices()), "tombstones", len(ds.GetTombstones()))
			p.mu.Lock()
			p.have = ds.GetRevision()
			if ds.GetEpoch() != "" {
				p.haveEpoch = ds.GetEpoch()
			}
			p.mu.Unlock()
		}
		p.mu.Lock()
		if !p.dirty || p.stopped {
			p.running = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
}

// stop ends pushing and waits for a send in progress.
func (p *pusher) stop() {
	p.mu.Lock()
	p.stopped = true
	if p.retry != nil {
		p.retry.Stop()
		p.retry = nil
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// receive handles what the agent sends on its sync stream until it ends.
func (g *Gateway) receive(ctx context.Context, stream fleetv1.Fleet_SyncServer, out *hubSender, s *agentSession) error {
	cs := connOf(s.sess)
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		g.heard(cs)
		switch m := msg.GetMsg().(type) {
		case *fleetv1.AgentMessage_Heartbeat:
			g.mu.Lock()
			s.outboxPending, s.outboxDropped = m.Heartbeat.GetOutboxPending(), m.Heartbeat.GetOutboxDropped()
			s.outboxKinds = outboxKinds(m.Heartbeat.GetOutboxKinds())
			g.mu.Unlock()
			g.beat(s)
		case *fleetv1.AgentMessage_Ack:
			g.mu.Lock()
			s.revision = max(s.revision, m.Ack.GetRevision())
			g.mu.Unlock()
		case *fleetv1.AgentMessage_Status:
			g.beat(s)
			if err := g.report(ctx, out, s.cluster, m.Status); err != nil {
				return err
			}
		case *fleetv1.AgentMessage_Payload:
			g.beat(s)
			if err := g.payload(ctx, out, s, m.Payload); err != nil {
				return err
			}
		case *fleetv1.AgentMessage_Hello:
			return status.Error(codes.InvalidArgument, "sync: hello sent twice")
		default:
			return status.Errorf(codes.InvalidArgument, "sync: unknown message %T", m)
		}
	}
}

func (g *Gateway) beat(s *agentSession) {
	now := g.cfg.Now()
	g.mu.Lock()
	s.lastBeat = now
	save := now.Sub(s.lastSaved) >= g.cfg.SeenInterval
	if save {
		s.lastSaved = now
	}
	g.mu.Unlock()
	if save {
		g.noteSeen(s.cluster, fleet.AgentInfo{})
	}
}

// report stores a status report sent as AgentMessage.status (by agents
// older than payload kinds, or to a hub that named none), then
// acknowledges it so the agent can drop it from its outbox.
func (g *Gateway) report(ctx context.Context, out *hubSender, cluster string, rep *fleetv1.StatusReport) error {
	if err := g.saveReport(ctx, cluster, rep); err != nil {
		if status.Code(err) == codes.PermissionDenied {
			return err
		}
		// Not acknowledged: the agent sends it again after reconnecting.
		return status.Errorf(codes.Unavailable, "store status report %d of %q: %v", rep.GetSeq(), cluster, err)
	}
	return out.send(&fleetv1.HubMessage{Msg: &fleetv1.HubMessage_StatusAck{StatusAck: &fleetv1.StatusAck{Seq: rep.GetSeq()}}})
}

// saveReport stores a status report, if the hub keeps them.
func (g *Gateway) saveReport(ctx context.Context, cluster string, rep *fleetv1.StatusReport) error {
	if g.cfg.Status == nil {
		return nil
	}
	return g.storeWrite(ctx, func() error { return g.cfg.Status.SaveReport(ctx, cluster, rep) })
}

// chartChunk is the size of one FetchChart message.
const chartChunk = 256 << 10

// FetchChart streams a chart archive that is part of the caller's desired
// state.
func (f *fleetService) FetchChart(req *fleetv1.FetchChartRequest, stream fleetv1.Fleet_FetchChartServer) error {
	g := f.g
	ctx := stream.Context()
	id := identityFrom(ctx)
	digest := req.GetDigest()
	if g.cfg.Desired == nil || g.cfg.Charts == nil {
		return status.Error(codes.Unimplemented, "this hub serves no charts")
	}
	ok, err := g.cfg.Desired.HasChart(ctx, id.cluster, digest)
	if err != nil {
		return status.Errorf(codes.Unavailable, "fetch chart %q: %v", digest, err)
	}
	if !ok {
		return status.Errorf(codes.PermissionDenied, "fetch chart %q: not in the desired state of cluster %q", digest, id.cluster)
	}
	rc, size, err := g.cfg.Charts.Open(digest)
	if err != nil {
		return status.Errorf(codes.NotFound, "fetch chart %q: %v", digest, err)
	}
	defer rc.Close()
	buf := make([]byte, chartChunk)
	for {
		n, err := io.ReadFull(rc, buf)
		if n > 0 {
			if serr := stream.Send(&fleetv1.ChartChunk{Data: buf[:n], TotalSize: uint64(size)}); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return status.Errorf(codes.Internal, "fetch chart %q: read: %v", digest, err)
		}
	}
}
