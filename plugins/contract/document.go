package contract

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/sluice-gw/sluice/proxy/config"
)

// document is a provider's OpenAPI document, compiled: loaded, validated,
// its references resolved and its operations in a router.
type document struct {
	path   string
	router routers.Router
	// base is the path of the document's first server URL without a
	// trailing slash ("/v1" for https://api.example.com/v1): the
	// document's paths follow it in the URI the provider receives.
	base string
}

// validationOptions are kin-openapi's checks of the document itself. The
// examples a provider ships are documentation, not contract: a stale one
// must not keep the gateway from loading.
var validationOptions = []openapi3.ValidationOption{openapi3.DisableExamplesValidation()}

// loadDocument reads and compiles the OpenAPI document at path. Its errors
// name the file and, where kin-openapi says it, the line or the JSON
// pointer of the problem in the document.
func loadDocument(path string) (*document, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the OpenAPI document %s: %v", path, config.UnwrapPathErr(err))
	}
	loader := openapi3.NewLoader()
	// One file: a reference to another file or a URL would make loading
	// the config depend on the network or on files nobody watches.
	loader.IsExternalRefsAllowed = false
	doc, err := loader.LoadFromData(data)
	if err != nil {
		return nil, fmt.Errorf("OpenAPI document %s: %v", path, err)
	}
	if doc.OpenAPI == "" || !strings.HasPrefix(doc.OpenAPI, "3.") {
		return nil, fmt.Errorf("OpenAPI document %s: want an OpenAPI 3 document (\"openapi: 3.x\"), got openapi %q", path, doc.OpenAPI)
	}
	if err := doc.Validate(context.Background(), validationOptions...); err != nil {
		return nil, fmt.Errorf("OpenAPI document %s is not valid: %v", path, err)
	}
	d := &document{path: path}
	if len(doc.Servers) > 0 && doc.Servers[0] != nil {
		base, err := doc.Servers[0].BasePath()
		if err != nil {
			return nil, fmt.Errorf("OpenAPI document %s: servers[0].url: %v", path, err)
		}
		d.base = strings.TrimSuffix(base, "/")
	}
	// Calls are matched by path only: the gateway already chose the host.
	doc.Servers = nil
	for _, item := range doc.Paths.Map() {
		item.Servers = nil
	}
	d.router, err = legacy.NewRouter(doc, validationOptions...)
	if err != nil {
		return nil, fmt.Errorf("OpenAPI document %s: %v", path, err)
	}
	return d, nil
}

// errUnknownOperation is a call that matches no operation of the document.
var errUnknownOperation = errors.New("unknown operation")

// find matches a method and a request URI (path and query, as the provider
// receives it) to an operation. The *http.Request it returns carries them,
// for kin-openapi's checks.
func (d *document) find(method string, uri []byte) (*http.Request, *routers.Route, map[string]string, error) {
	u, err := url.ParseRequestURI(string(uri))
	if err != nil {
		return nil, nil, nil, errUnknownOperation
	}
	req := &http.Request{Method: method, URL: u, Header: http.Header{}, Body: http.NoBody}
	rest, ok := strings.CutPrefix(u.Path, d.base)
	if !ok || (rest != "" && rest[0] != '/') {
		return req, nil, nil, errUnknownOperation
	}
	if d.base != "" {
		// The router sees the path relative to the server URL.
		v := *u
		v.Path, v.RawPath = rest, ""
		req.URL = &v
	}
	route, params, err := d.router.FindRoute(req)
	if err != nil {
		return req, nil, nil, errUnknownOperation
	}
	req.URL = u
	return req, route, params, nil
}

// operationName is the operation's label in metrics and logs: its
// operationId, or "METHOD /path" when it has none.
func operationName(route *routers.Route) string {
	if route == nil {
		return "unknown"
	}
	if route.Operation != nil && route.Operation.OperationID != "" {
		return route.Operation.OperationID
	}
	return route.Method + " " + route.Path
}

// options for openapi3filter: every violation (MultiError), the request
// left as it is (no defaults written into it), credentials not checked
// (the gateway adds them after this check: inject_auth).
func filterOptions() *openapi3filter.Options {
	return &openapi3filter.Options{
		MultiError:            true,
		SkipSettingDefaults:   true,
		IncludeResponseStatus: true,
		AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
	}
}
