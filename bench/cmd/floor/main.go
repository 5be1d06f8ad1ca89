// Command floor is the load test's floor: the least a fasthttp proxy can do,
// a handler that only calls HostClient.Do to the origin and returns its
// answer. No routing, no header hygiene, no metrics. Sluice is built on the
// same server and client, so its cost over this one is what Sluice itself adds.
//
//	floor -addr 127.0.0.1:28083 -upstream 127.0.0.1:28080
package main

import (
	"flag"
	"log"
	"time"

	"github.com/valyala/fasthttp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:28083", "listen address")
	upstream := flag.String("upstream", "127.0.0.1:28080", "origin host:port")
	flag.Parse()

	client := &fasthttp.HostClient{Addr: *upstream, MaxConns: 1024, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	srv := &fasthttp.Server{
		Name: "floor",
		Handler: func(ctx *fasthttp.RequestCtx) {
			if err := client.Do(&ctx.Request, &ctx.Response); err != nil {
				ctx.Error(err.Error(), fasthttp.StatusBadGateway)
			}
		},
	}
	log.Printf("floor: listening on %s, upstream %s", *addr, *upstream)
	log.Fatal(srv.ListenAndServe(*addr))
}
