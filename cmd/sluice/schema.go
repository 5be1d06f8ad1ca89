package main

import (
	"io"

	"github.com/sluice-gw/sluice/plugins"
	"github.com/sluice-gw/sluice/proxy"
)

// printConfigSchema writes the JSON Schema of the configuration file, with
// every built-in plugin's block, to w: `sluice config schema`.
// docs/config.schema.json is its output:
//
//	go run ./cmd/sluice config schema > docs/config.schema.json
func printConfigSchema(w io.Writer) error {
	b, err := proxy.ConfigSchema(plugins.Registry())
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
