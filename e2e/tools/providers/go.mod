module github.com/tetherfleet/tether/e2e/tools/providers

go 1.26.0

// This module only pins the infrastructure providers whose CRDs the
// real-provider ClusterTemplates are dry-run against; nothing here is built.
// e2e/tools/build.sh runs `go mod download` and copies config/crd/bases out of
// the module zips. Do not `go mod tidy` it (nothing imports these modules).
require (
	sigs.k8s.io/cluster-api-provider-aws/v2 v2.13.0
	sigs.k8s.io/cluster-api-provider-azure v1.21.0
	sigs.k8s.io/cluster-api-provider-openstack v0.13.0
	sigs.k8s.io/cluster-api-provider-vsphere v1.14.0
)
