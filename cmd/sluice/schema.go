package main

import (
	"errors"
	"io"
)

// printConfigSchema writes the JSON Schema of the config file to w.
//
// Placeholder: the schema generator is built on another branch, which
// replaces this file. Until then `sluice config schema` fails with this error.
func printConfigSchema(w io.Writer) error {
	return errors.New("the config schema is not built into this binary yet")
}
