package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sluice-gw/sluice/proxy/config"
)

func defineHealthcheck(fs *flag.FlagSet) action {
	configPath := configFlag(fs)
	rawURL := fs.String("url", "", "URL to check instead of the config's admin.listen")
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	return func(c *cli, cmd *command, args []string) int {
		if !c.noArgs(cmd, args, "") {
			return exitUsage
		}
		if *timeout <= 0 {
			return c.usageError(cmd, fmt.Sprintf("-timeout %v: must be positive", *timeout))
		}
		if *rawURL != "" && *configPath != "" {
			return c.usageError(cmd, "-config and -url exclude each other: -url checks that URL without reading a config")
		}
		target := *rawURL
		if target != "" {
			u, err := healthURL(target)
			if err != nil {
				return c.usageError(cmd, err.Error())
			}
			target = u
		} else {
			var code int
			if target, code = c.adminReadyz(*configPath); target == "" {
				return code
			}
		}
		return c.probe(target, *timeout)
	}
}

// healthURL checks a -url value; without a path it means /readyz.
func healthURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		shown := fmt.Sprintf(" %q", raw)
		if strings.Contains(raw, "@") {
			shown = "" // it may hold a password
		}
		return "", fmt.Errorf("-url%s: want http://HOST:PORT[/PATH], e.g. http://127.0.0.1:9090/readyz", shown)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/readyz"
	}
	return u.String(), nil
}

// adminReadyz finds the /readyz URL of the config's admin listener. On
// failure it prints why and returns "" and the exit code.
func (c *cli) adminReadyz(flagValue string) (string, int) {
	fail := func(format string, args ...any) (string, int) {
		fmt.Fprintf(c.stderr, "sluice healthcheck: "+format+"\n", args...)
		return "", exitFail
	}
	path, _, err := c.configPath(flagValue)
	if err != nil {
		return fail("%v", err)
	}
	cfg, err := config.Load(path)
	if cfg == nil {
		return fail("%v", err)
	}
	if err != nil {
		// The running gateway may well be serving its previous config (a
		// reload with problems is rejected): only problems of admin.listen
		// itself make the address unknown.
		var ce *config.ConfigError
		if !errors.As(err, &ce) {
			return fail("%s: %v", path, err)
		}
		for _, p := range ce.Problems {
			if p.Path == "admin.listen" || p.Path == "admin" || p.Path == "" {
				return fail("%s: %s", path, p)
			}
		}
		fmt.Fprintf(c.stderr, "sluice healthcheck: note: %s has %d problem(s) (sluice validate -config %s lists them); checking admin.listen %s anyway\n",
			path, len(ce.Problems), path, cfg.Admin.Listen)
	}
	if cfg.Admin.Listen == "" {
		return fail("admin.listen is empty in %s: the admin listener, and /readyz with it, is off. Set admin.listen, or check another address with -url", path)
	}
	return "http://" + connectAddr(cfg.Admin.Listen) + "/readyz", exitOK
}

// connectAddr turns a listen address into one to connect to: a listener on
// every interface (0.0.0.0, [::], no host) is reached on 127.0.0.1. Go listens
// on [::] and on "" dual-stack, so 127.0.0.1 reaches those too, and it exists
// in containers where IPv6, and so ::1, is disabled.
func connectAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen // validated by config.Load; kept as is for the error message
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// probe GETs target and reports: exit 0 on 200, else 1 with one line on stderr.
// Messages show target without a password it may carry.
func (c *cli) probe(target string, timeout time.Duration) int {
	shown := target
	if u, err := url.Parse(target); err == nil {
		shown = u.Redacted()
	}
	client := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:             nil, // never through HTTP_PROXY: the admin port is local
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		fmt.Fprintf(c.stderr, "sluice healthcheck: GET %s: %v\n", shown, err)
		return exitFail
	}
	req.Header.Set("User-Agent", "sluice-healthcheck/"+getVersion())
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			fmt.Fprintf(c.stderr, "sluice healthcheck: GET %s: no answer within %v\n", shown, timeout)
		} else {
			fmt.Fprintf(c.stderr, "sluice healthcheck: GET %s: %v\n", shown, err)
		}
		return exitFail
	}
	defer resp.Body.Close()
	line := firstLine(resp.Body)
	if resp.StatusCode != http.StatusOK {
		if line == "" {
			line = "(empty body)"
		}
		fmt.Fprintf(c.stderr, "sluice healthcheck: GET %s: %s: %s\n", shown, resp.Status, line)
		return exitFail
	}
	fmt.Fprintf(c.stdout, "GET %s: %s %s\n", shown, resp.Status, line)
	return exitOK
}

// firstLine sums a body up in one line: a JSON body (the gateway's
// {"status":"draining"}) compacted, anything else its first line; at most
// 200 bytes.
func firstLine(body io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(body, 512))
	var compact bytes.Buffer
	line := ""
	if json.Compact(&compact, b) == nil {
		line = compact.String()
	} else {
		line, _, _ = strings.Cut(string(b), "\n")
		line = strings.TrimSpace(line)
	}
	if len(line) > 200 {
		cut := 200
		for cut > 0 && !utf8.RuneStart(line[cut]) {
			cut-- // not in the middle of a character
		}
		line = line[:cut] + "..."
	}
	return line
}
