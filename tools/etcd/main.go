// Command etcd is the etcd server, built from the Go module proxy: Debian's
// etcd is 3.4, older than what current kube-apiserver releases support.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
