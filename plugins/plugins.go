// Package plugins is the pipeline of the plugins built into Sluice: which
// plugins exist, and where each of their parts runs. Adding a plugin is one
// package under plugins/ and one line here, at the place where it must run.
package plugins

import (
	"github.com/sluice-gw/sluice/plugins/authenticate"
	"github.com/sluice-gw/sluice/plugins/cache"
	"github.com/sluice-gw/sluice/plugins/circuitbreaker"
	"github.com/sluice-gw/sluice/plugins/contract"
	"github.com/sluice-gw/sluice/plugins/headers"
	"github.com/sluice-gw/sluice/plugins/idempotency"
	"github.com/sluice-gw/sluice/plugins/injectauth"
	"github.com/sluice-gw/sluice/plugins/normalizeerrors"
	"github.com/sluice-gw/sluice/plugins/ratelimit"
	"github.com/sluice-gw/sluice/plugins/retry"
	"github.com/sluice-gw/sluice/proxy"
)

// Pipeline lists every place in the pipeline, outermost first: a request
// passes them top to bottom on its way to the upstream, and the answer
// comes back bottom to top. The order is fixed here, whatever the YAML says.
func Pipeline() []proxy.Place {
	return []proxy.Place{
		normalizeerrors.Factory, // sees every answer last, gateway errors included
		authenticate.Factory,    // who is calling: nothing below runs for a refused caller
		ratelimit.Factory,       // the caller's fair share, counted for every call, hits included
		idempotency.Factory,     // a repeated keyed POST/PATCH is answered here, from the stored answer
		headers.Factory,         // request edits before cache keys; response edits on hits too
		contract.Factory,        // a call the provider's OpenAPI document refuses goes no further (hits included)
		cache.Factory,           // a hit ends the call here
		contract.Factory.Part(contract.PartResponses),       // the provider's own answers, after retries, checked for drift
		injectauth.Factory,                                  // the provider's credentials, once per call, kept by every retry
		retry.Factory,                                       // each attempt below runs once per try
		circuitbreaker.Factory,                              // a failing target is not called
		ratelimit.Factory.Part(ratelimit.PartUpstreamQuota), // the provider's quota, per attempt that leaves
	}
}

// Registry returns the pipeline of every built-in plugin.
func Registry() *proxy.Registry { return proxy.NewRegistry(Pipeline()...) }
