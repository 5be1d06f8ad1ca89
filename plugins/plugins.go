// Package plugins lists the plugins built into Sluice. Adding a plugin is one
// package under plugins/ and one line here.
package plugins

import (
	"github.com/sluice-gw/sluice/plugins/authenticate"
	"github.com/sluice-gw/sluice/plugins/cache"
	"github.com/sluice-gw/sluice/plugins/circuitbreaker"
	"github.com/sluice-gw/sluice/plugins/headers"
	"github.com/sluice-gw/sluice/plugins/injectauth"
	"github.com/sluice-gw/sluice/plugins/normalizeerrors"
	"github.com/sluice-gw/sluice/plugins/ratelimit"
	"github.com/sluice-gw/sluice/plugins/retry"
	"github.com/sluice-gw/sluice/proxy"
)

// All returns the factories of every built-in plugin.
func All() []*proxy.Factory {
	return []*proxy.Factory{
		normalizeerrors.Factory,
		headers.Factory,
		circuitbreaker.Factory,
		retry.Factory,
		authenticate.Factory,
		injectauth.Factory,
		ratelimit.Factory,
		cache.Factory,
	}
}

// Registry returns a registry of every built-in plugin.
func Registry() *proxy.Registry { return proxy.NewRegistry(All()...) }
