// Command etcd is the upstream etcd server (go.etcd.io/etcd/server/v3
// etcdmain), built for the e2e harness; Debian's etcd is too old.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
