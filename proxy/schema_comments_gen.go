//go:build ignore

// schema_comments_gen writes schema_comments.go, the doc comments of the
// config structs that describe the keys of the JSON Schema. Run it with
// `go generate ./proxy` after changing a config struct's comments.
package main

import (
	"fmt"
	"os"

	"github.com/sluice-gw/sluice/proxy/internal/schemadoc"
)

func main() {
	src, err := schemadoc.Generate("..")
	if err == nil {
		err = os.WriteFile("schema_comments.go", src, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "schema_comments_gen:", err)
		os.Exit(1)
	}
}
