package gateway

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
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
	now := g.cfg.Now()
	sign := func(cluster string) (fleet.Issued, error) {
		return g.sign(req.GetCsrDer(), cluster, now)
	}
	cluster, issued, err := g.cfg.Registry.Enroll(ctx, req.GetToken(), fleet.AgentInfo{Version: req.GetAgentVersion(), Address: id.remote}, sign)
	if err != nil {
		g.log.Info("enrolment refused", "remote", id.remote, "err", err)
		return nil, status.Error(enrollCode(err), err.Error())
	}
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
	now := g.cfg.Now()
	s := &agentSession{
		cluster: id.cluster, sess: id.sess, remote: id.remote, since: now, lastBeat: now, lastSaved: now,
		version: hello.GetAgentVersion(), hostname: hello.GetHostname(), revision: hello.GetHaveRevision(),
	}
	info := fleet.AgentInfo{Version: s.version, Hostname: s.hostname, Address: s.remote}
	if err := g.cfg.Registry.Seen(ctx, id.cluster, info); err != nil {
		return status.Errorf(codes.Unavailable, "sync: %v", err)
	}
	g.register(s)
	g.log.Info("agent connected", "cluster", id.cluster, "remote", id.remote, "version", s.version, "revision", s.revision)
	defer func() {
		g.unregister(s)
		// The stream's context is done; record the last contact regardless.
		if err := g.cfg.Registry.Seen(context.WithoutCancel(ctx), id.cluster, fleet.AgentInfo{}); err != nil && !errors.Is(err, fleet.ErrNotFound) {
			g.log.Warn("record disconnect", "cluster", id.cluster, "err", err)
		}
		g.log.Info("agent disconnected", "cluster", id.cluster, "remote", id.remote)
	}()
	err = stream.Send(&fleetv1.HubMessage{Msg: &fleetv1.HubMessage_Welcome{Welcome: &fleetv1.Welcome{
		Cluster:          id.cluster,
		ServerTime:       timestamppb.New(now),
		HeartbeatSeconds: uint32(g.cfg.Heartbeat / time.Second),
	}}})
	if err != nil {
		return err
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch m := msg.GetMsg().(type) {
		case *fleetv1.AgentMessage_Heartbeat:
			g.beat(ctx, s)
		case *fleetv1.AgentMessage_Ack:
			g.mu.Lock()
			s.revision = max(s.revision, m.Ack.GetRevision())
			g.mu.Unlock()
		case *fleetv1.AgentMessage_Status:
			g.beat(ctx, s)
		case *fleetv1.AgentMessage_Hello:
			return status.Error(codes.InvalidArgument, "sync: hello sent twice")
		default:
			return status.Errorf(codes.InvalidArgument, "sync: unknown message %T", m)
		}
	}
}

func (g *Gateway) beat(ctx context.Context, s *agentSession) {
	now := g.cfg.Now()
	g.mu.Lock()
	s.lastBeat = now
	save := now.Sub(s.lastSaved) >= g.cfg.SeenInterval
	if save {
		s.lastSaved = now
	}
	g.mu.Unlock()
	if save {
		if err := g.cfg.Registry.Seen(ctx, s.cluster, fleet.AgentInfo{}); err != nil {
			g.log.Warn("record heartbeat", "cluster", s.cluster, "err", err)
		}
	}
}
