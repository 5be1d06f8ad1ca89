package proxy

import "github.com/valyala/fasthttp"

// ResetResponse clears ctx.Response before another attempt (retries): the
// failed attempt's status, headers and body go, and the settings the
// gateway's server gives every response stay (no Content-Type is invented
// for an answer that has none; see Gateway.newServer). ex.FromUpstream is
// cleared with it, and the answer's share of the body budget given back.
func ResetResponse(ctx *fasthttp.RequestCtx, ex *Exchange) {
	ex.releaseResponseBody()
	ctx.Response.Reset()
	ctx.Response.Header.SetNoDefaultContentType(true)
	ex.FromUpstream = false
}
