package injectauth

import (
	"encoding/base64"
	"net/url"
	"sync/atomic"

	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/valyala/fasthttp"
)

// static attaches a fixed credential, or one of a pool in turn. Values are
// built once, at config load: a request copies bytes and allocates nothing.
type static struct {
	query  bool     // a query parameter instead of a header
	name   []byte   // header or parameter name
	values [][]byte // header values ("Bearer TOKEN"...) or encoded parameter values
	next   atomic.Uint32
}

var strAuthorization = []byte("Authorization")

func newStatic(c *Credential) *static {
	s := &static{}
	secrets := c.Keys
	switch c.Type {
	case TypeBearer:
		if c.Token.IsSet() {
			secrets = []config.Secret{c.Token}
		}
		s.name = strAuthorization
		for _, k := range secrets {
			s.values = append(s.values, []byte("Bearer "+k.Reveal()))
		}
	case TypeHeader, TypeQuery:
		if c.Value.IsSet() {
			secrets = []config.Secret{c.Value}
		}
		s.query = c.Type == TypeQuery
		s.name = []byte(c.Name)
		if s.query {
			s.name = []byte(url.QueryEscape(c.Name))
		}
		for _, k := range secrets {
			v := k.Reveal()
			if s.query {
				v = url.QueryEscape(v)
			}
			s.values = append(s.values, []byte(v))
		}
	case TypeBasic:
		s.name = strAuthorization
		s.values = [][]byte{[]byte("Basic " + base64.StdEncoding.EncodeToString([]byte(c.Username+":"+c.Password.Reveal())))}
	}
	return s
}

func (s *static) pick() []byte {
	if len(s.values) == 1 {
		return s.values[0]
	}
	n := s.next.Add(1) - 1
	return s.values[n%uint32(len(s.values))]
}

func (s *static) inject(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	v := s.pick()
	if s.query {
		ex.AddUpstreamQuery(s.name, v)
	} else {
		// Set replaces the first value only: drop any the caller sent first.
		ctx.Request.Header.DelBytes(s.name)
		ctx.Request.Header.SetBytesKV(s.name, v)
	}
	return next.Handle(ctx, ex)
}
