// Command origin is the load test's upstream: a fasthttp server answering
// GET /json with 1 KiB of JSON and "Cache-Control: public, max-age=60" (so
// the caches under test keep it), counting the requests it serves. GET
// /__count returns that count without counting itself: the harness reads it
// to prove that pass-through targets reached the origin and cache hits did not.
//
//	origin -addr 127.0.0.1:28080
package main

import (
	"flag"
	"log"
	"strconv"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:28080", "listen address")
	flag.Parse()

	body := []byte(`{"items":"`)
	for len(body) < 1024-2 {
		body = append(body, 'a'+byte(len(body)%26))
	}
	body = append(body, `"}`...)

	var served atomic.Int64
	srv := &fasthttp.Server{
		Name:                          "origin",
		DisableHeaderNamesNormalizing: true,
		Handler: func(ctx *fasthttp.RequestCtx) {
			switch string(ctx.Path()) {
			case "/__count":
				ctx.SetBodyString(strconv.FormatInt(served.Load(), 10))
			case "/json":
				served.Add(1)
				ctx.Response.Header.SetContentType("application/json")
				ctx.Response.Header.Set("Cache-Control", "public, max-age=60")
				ctx.Response.SetBodyRaw(body)
			default:
				served.Add(1)
				ctx.SetStatusCode(fasthttp.StatusNotFound)
			}
		},
	}
	log.Printf("origin: listening on %s", *addr)
	log.Fatal(srv.ListenAndServe(*addr))
}
