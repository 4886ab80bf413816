package cli

import (
	"github.com/spf13/pflag"

	"github.com/tetherfleet/tether/hub/internal/remotewrite"
)

// remoteWriteFlags are `tether serve`'s remote-write flags: one or more
// URLs, sharing one set of credentials.
type remoteWriteFlags struct {
	urls                                     []string
	bearerTokenFile, basicUser, basicPwdFile string
	caFile                                   string
}

func (r *remoteWriteFlags) register(f *pflag.FlagSet, maxQueueBytes *int64) {
	f.StringArrayVar(&r.urls, "remote-write-url", nil, "forward every stored sample to this Prometheus remote-write URL, e.g. http://prometheus:9090/api/v1/write (repeatable); queued on disk in --data-dir/remote-write while the store is down")
	f.StringVar(&r.bearerTokenFile, "remote-write-bearer-token-file", "", "file holding the bearer token sent to every --remote-write-url (read on each request)")
	f.StringVar(&r.basicUser, "remote-write-basic-auth-user", "", "basic-auth user for every --remote-write-url")
	f.StringVar(&r.basicPwdFile, "remote-write-basic-auth-password-file", "", "file holding the basic-auth password for every --remote-write-url")
	f.Int64Var(maxQueueBytes, "remote-write-max-queue-bytes", 0, "bound of the remote-write queue on disk; above it the oldest unsent samples are dropped and counted (0: 10 GiB)")
	f.StringVar(&r.caFile, "remote-write-ca-file", "", "CA bundle verifying https --remote-write-url servers (default: the system roots)")
}

func (r *remoteWriteFlags) endpoints() []remotewrite.Endpoint {
	var eps []remotewrite.Endpoint
	for _, u := range r.urls {
		eps = append(eps, remotewrite.Endpoint{
			URL: u, BearerTokenFile: r.bearerTokenFile,
			BasicAuthUser: r.basicUser, BasicAuthPasswordFile: r.basicPwdFile, CAFile: r.caFile,
		})
	}
	return eps
}
