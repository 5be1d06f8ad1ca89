package injectauth

import (
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
)

// bearerCredential is type bearer: "Authorization: Bearer TOKEN".
type bearerCredential struct {
	// Token is the bearer token.
	Token config.Secret `koanf:"token" json:"token,omitempty"`
	// Keys is a pool of tokens used instead of Token, one per request in
	// turn (round-robin), so that a per-key quota is multiplied.
	Keys []config.Secret `koanf:"keys" json:"keys,omitempty"`
}

func (*bearerCredential) kind() string         { return TypeBearer }
func (c *bearerCredential) settle() credential { return c }

func (c *bearerCredential) check(at func(string) string, p *config.Problems) {
	checkValueOrKeys(at, "token", c.Token, c.Keys, p)
}

func (c *bearerCredential) newInjector(*proxy.Build) (injector, error) {
	s := &static{header: hdrAuthorization}
	for _, k := range pool(c.Token, c.Keys) {
		s.values = append(s.values, []byte("Bearer "+k.Reveal()))
	}
	return s, nil
}

// namedValue is what types header and query are made of: Name carries
// Value, or one of Keys in turn.
type namedValue struct {
	// Name is the header or query parameter that carries the value.
	Name string `koanf:"name" json:"name,omitempty"`
	// Value is its value.
	Value config.Secret `koanf:"value" json:"value,omitempty"`
	// Keys is a pool of values used instead of Value, one per request in
	// turn (round-robin).
	Keys []config.Secret `koanf:"keys" json:"keys,omitempty"`
}

func (c *namedValue) check(at func(string) string, p *config.Problems) {
	checkValueOrKeys(at, "value", c.Value, c.Keys, p)
	if c.Name == "" {
		p.Add(at("name"), "is required")
	}
}

// headerCredential is type header: the header Name carries Value.
type headerCredential struct {
	namedValue `koanf:",squash"`
}

func (*headerCredential) kind() string         { return TypeHeader }
func (c *headerCredential) settle() credential { return c }

func (c *headerCredential) check(at func(string) string, p *config.Problems) {
	c.namedValue.check(at, p)
	switch {
	case c.Name == "":
	case !httpx.ValidToken(c.Name):
		p.Addf(at("name"), "invalid header name %q", c.Name)
	case reservedHeader(c.Name):
		p.Addf(at("name"), "header %q cannot carry a credential here (the gateway owns it)", c.Name)
	}
}

func (c *headerCredential) newInjector(*proxy.Build) (injector, error) {
	s := &static{header: httpx.NewName(c.Name)}
	for _, k := range pool(c.Value, c.Keys) {
		s.values = append(s.values, []byte(k.Reveal()))
	}
	return s, nil
}

// queryCredential is type query: the query parameter Name carries Value.
type queryCredential struct {
	namedValue `koanf:",squash"`
}

func (*queryCredential) kind() string         { return TypeQuery }
func (c *queryCredential) settle() credential { return c }

func (c *queryCredential) newInjector(*proxy.Build) (injector, error) {
	s := &static{query: true, name: []byte(url.QueryEscape(c.Name))}
	for _, k := range pool(c.Value, c.Keys) {
		s.values = append(s.values, []byte(url.QueryEscape(k.Reveal())))
	}
	return s, nil
}

// basicCredential is type basic: HTTP Basic credentials.
type basicCredential struct {
	// Username is the account name.
	Username string `koanf:"username" json:"username,omitempty"`
	// Password is the account's password.
	Password config.Secret `koanf:"password" json:"password,omitempty"`
}

func (*basicCredential) kind() string         { return TypeBasic }
func (c *basicCredential) settle() credential { return c }

func (c *basicCredential) check(at func(string) string, p *config.Problems) {
	if c.Username == "" {
		p.Add(at("username"), "is required")
	} else if strings.ContainsAny(c.Username, ":\r\n") {
		p.Add(at("username"), "must not contain ':' or line breaks")
	}
	if !c.Password.IsSet() {
		p.Add(at("password"), "is required (is its ${VAR} or file: source empty?)")
	}
}

func (c *basicCredential) newInjector(*proxy.Build) (injector, error) {
	return &static{header: hdrAuthorization, values: [][]byte{[]byte("Basic " + basic(c.Username, c.Password.Reveal()))}}, nil
}

// static attaches a fixed credential, or one of a pool in turn. Values are
// built once, at config load: a request copies bytes and allocates nothing.
type static struct {
	query  bool       // a query parameter instead of a header
	header httpx.Name // the header that carries the value (not query)
	name   []byte     // the query parameter's name (query)
	values [][]byte   // header values ("Bearer TOKEN"...) or encoded parameter values
	next   atomic.Uint32
}

var hdrAuthorization = httpx.NewName("Authorization")

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
		s.header.Del(&ctx.Request.Header)
		s.header.Set(&ctx.Request.Header, v)
	}
	return next.Handle(ctx, ex)
}
