package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ConfigEnv names the config file when -config is not given.
const ConfigEnv = "SLUICE_CONFIG"

// defaultSearchPath is tried in order when neither -config nor SLUICE_CONFIG
// names the file. The production path comes first, so that a demo file left
// in the working directory never shadows it; the checkout's demo config is
// the last resort.
var defaultSearchPath = []string{
	"/etc/sluice/config.yaml",
	"config.yaml",
	"config.example.yaml",
}

// configPath is the file to load: flagValue when given, else $SLUICE_CONFIG
// when set, else the first of c.searchPath that exists. searched reports the
// last case. Only a file that does not exist is passed over: any other
// problem with a path (a directory without permission, say) stops the search
// there, so that it is reported instead of silently falling through to the
// demo config.
func (c *cli) configPath(flagValue string) (path string, searched bool, err error) {
	if flagValue != "" {
		return flagValue, false, nil
	}
	if p := c.getenv(ConfigEnv); p != "" {
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			return "", false, fmt.Errorf("config file %s (from %s): does not exist", p, ConfigEnv)
		}
		return p, false, nil
	}
	for _, p := range c.searchPath {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			return p, true, nil
		}
	}
	return "", false, c.notFound()
}

func (c *cli) notFound() error {
	tried := make([]string, len(c.searchPath))
	relative := false
	for i, p := range c.searchPath {
		tried[i] = p
		if !filepath.IsAbs(p) {
			tried[i] = "." + string(filepath.Separator) + p
			relative = true
		}
	}
	where := ""
	if wd, err := os.Getwd(); err == nil && relative {
		where = " (in " + wd + ")"
	}
	return fmt.Errorf("no config file found; tried %s%s. Give one with -config FILE or %s=FILE",
		strings.Join(tried, ", "), where, ConfigEnv)
}
