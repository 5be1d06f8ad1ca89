// Command sluice is the Sluice API gateway for outbound integrations.
//
//	sluice [-config FILE]            run the gateway
//	sluice validate [-config FILE]   check a config, print every problem, exit 1 if any
//	sluice version                   print the version
//
// -config defaults to config.example.yaml in the working directory, then
// /etc/sluice/config.yaml. SIGHUP reloads the config; SIGTERM/SIGINT drain
// in-flight requests, then exit 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/sluice-gw/sluice/plugins"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 {
		switch args[0] {
		case "validate", "version", "run":
			cmd, args = args[0], args[1:]
		case "help", "-h", "-help", "--help":
			usage(stdout)
			return 0
		}
	}
	if cmd == "version" {
		fmt.Fprintln(stdout, "sluice", getVersion())
		return 0
	}

	fs := flag.NewFlagSet("sluice "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "config file (default: config.example.yaml, then /etc/sluice/config.yaml)")
	fs.Usage = func() { usage(stderr) }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sluice: unexpected argument %q\n", fs.Arg(0))
		usage(stderr)
		return 2
	}
	path := *configPath
	if path == "" {
		path = defaultConfigPath()
	}

	cfg, err := config.Load(path)
	if cmd == "validate" {
		return validate(path, cfg, err, stdout, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "sluice:", err)
		return 1
	}
	err = proxy.Run(context.Background(), cfg, proxy.Options{
		Plugins:    plugins.Registry(),
		ConfigPath: path,
		Version:    getVersion(),
	})
	if err != nil {
		fmt.Fprintln(stderr, "sluice:", err)
		return 1
	}
	return 0
}

// validate prints every problem of the file (schema and plugins) with its key path.
func validate(path string, cfg *config.Config, loadErr error, stdout, stderr io.Writer) int {
	err := proxy.Validate(cfg, loadErr, plugins.Registry())
	var ce *config.ConfigError
	switch {
	case err == nil:
		fmt.Fprintf(stdout, "%s: OK\n", path)
		return 0
	case !errors.As(err, &ce):
		fmt.Fprintln(stderr, "sluice:", err)
		return 1
	}
	fmt.Fprintf(stderr, "%s: %d problem(s)\n", path, len(ce.Problems))
	for _, p := range ce.Problems {
		fmt.Fprintf(stderr, "  %s\n", p)
	}
	return 1
}

func defaultConfigPath() string {
	for _, p := range []string{"config.example.yaml", "/etc/sluice/config.yaml"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "config.example.yaml"
}

func getVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  sluice [-config FILE]            run the gateway
  sluice validate [-config FILE]   check a config file; exit 1 and list every problem
  sluice version                   print the version

-config defaults to config.example.yaml in the working directory, then
/etc/sluice/config.yaml. Any key can be overridden from the environment:
SLUICE_SERVER__LISTEN=:9000 sets server.listen. SIGHUP reloads the config;
SIGTERM/SIGINT drain in-flight requests and exit 0.
`)
}
