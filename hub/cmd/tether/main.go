// Command tether is the Tether hub and its console: `tether serve` runs a
// hub; every other command talks to one.
package main

import (
	"os"

	"github.com/tetherfleet/tether/hub/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
