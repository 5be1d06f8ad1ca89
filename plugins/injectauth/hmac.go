package injectauth

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
)

// The parts of a request an hmac credential can sign, in signing order.
const (
	PartMethod    = "method"
	PartPath      = "path"
	PartQuery     = "query"
	PartTimestamp = "timestamp"
	PartBody      = "body"
)

var allParts = []string{PartMethod, PartPath, PartQuery, PartTimestamp, PartBody}

// hmacCredential is type hmac: each request is signed (see README for the
// exact string to sign).
type hmacCredential struct {
	// Secret is the signing key.
	Secret config.Secret `koanf:"secret" json:"secret,omitempty"`
	// Algorithm is sha256 (default) or sha512.
	Algorithm string `koanf:"algorithm" json:"algorithm,omitempty"`
	// Header receives the signature. Default "X-Signature".
	Header string `koanf:"header" json:"header,omitempty"`
	// TimestampHeader receives the Unix time in seconds the request was
	// signed at. Default "X-Timestamp" when the timestamp is signed, else
	// none.
	TimestampHeader string `koanf:"timestamp_header" json:"timestamp_header,omitempty"`
	// Sign lists the signed parts, in this order: method, path, query,
	// timestamp, body (hex SHA-256 of the body). Default all five.
	Sign []string `koanf:"sign" json:"sign,omitempty"`
	// Encoding of the signature: hex (default) or base64.
	Encoding string `koanf:"encoding" json:"encoding,omitempty"`
	// Prefix is written before the signature, e.g. "sha256=". Default none.
	Prefix string `koanf:"prefix" json:"prefix,omitempty"`
}

// Defaults sets the defaults that depend on no other setting.
func (c *hmacCredential) Defaults() {
	c.Algorithm = defaultHMACAlgorithm
	c.Header = defaultHMACHeader
	c.Sign = slices.Clone(allParts)
	c.Encoding = defaultHMACEncoding
}

func (*hmacCredential) kind() string { return TypeHMAC }

// settle fills what is written empty with its default, and the timestamp
// header when the timestamp is signed.
func (c *hmacCredential) settle() credential {
	s := *c
	if s.Algorithm == "" {
		s.Algorithm = defaultHMACAlgorithm
	}
	if s.Encoding == "" {
		s.Encoding = defaultHMACEncoding
	}
	if s.Header == "" {
		s.Header = defaultHMACHeader
	}
	if len(s.Sign) == 0 {
		s.Sign = slices.Clone(allParts)
	}
	if s.TimestampHeader == "" && slices.Contains(s.Sign, PartTimestamp) {
		s.TimestampHeader = defaultTimestampHdr
	}
	return &s
}

func (c *hmacCredential) check(at func(string) string, p *config.Problems) {
	if !c.Secret.IsSet() {
		p.Add(at("secret"), "is required (is its ${VAR} or file: source empty?)")
	}
	if c.Algorithm != "sha256" && c.Algorithm != "sha512" {
		p.Addf(at("algorithm"), "unknown algorithm %q: want sha256 or sha512", c.Algorithm)
	}
	if c.Encoding != "hex" && c.Encoding != "base64" {
		p.Addf(at("encoding"), "unknown encoding %q: want hex or base64", c.Encoding)
	}
	if !httpx.ValidToken(c.Header) || reservedHeader(c.Header) {
		p.Addf(at("header"), "invalid header name %q", c.Header)
	}
	seen := map[string]bool{}
	for i, part := range c.Sign {
		key := at(fmt.Sprintf("sign[%d]", i))
		switch {
		case !slices.Contains(allParts, part):
			p.Addf(key, "unknown part %q: want %s", part, strings.Join(allParts, ", "))
		case seen[part]:
			p.Addf(key, "duplicate part %q", part)
		}
		seen[part] = true
	}
	if c.TimestampHeader != "" && (!httpx.ValidToken(c.TimestampHeader) || reservedHeader(c.TimestampHeader)) {
		p.Addf(at("timestamp_header"), "invalid header name %q", c.TimestampHeader)
	}
	if strings.ContainsAny(c.Prefix, "\r\n\x00") {
		p.Add(at("prefix"), "must not contain CR, LF or NUL")
	}
}

func (c *hmacCredential) newInjector(*proxy.Build) (injector, error) { return newHMAC(c), nil }

// hmacSigner signs each request. The string to sign is the selected parts,
// in the order method, path, query, timestamp, body, joined by "\n" (see
// README): the signature covers exactly what the provider receives.
type hmacSigner struct {
	parts    []string
	header   httpx.Name
	tsHeader httpx.Name // empty: no timestamp header
	prefix   []byte
	base64   bool
	macs     sync.Pool // of *signState
	hasTS    bool      // the timestamp is one of the signed parts
	hasBody  bool      // the body is one of the signed parts
}

// signState is one pooled signer: the keyed hash and buffers that live on
// the heap once (a hash.Hash's arguments escape), not once per request.
type signState struct {
	mac hash.Hash
	buf []byte                  // the upstream URI and the timestamp
	sum []byte                  // the raw signature
	hex [2 * sha256.Size]byte   // the body digest
	out [8 + 2*sha512.Size]byte // the header value, when the prefix is short
}

func newHMAC(c *hmacCredential) *hmacSigner {
	newHash := sha256.New
	if c.Algorithm == "sha512" {
		newHash = sha512.New
	}
	key := []byte(c.Secret.Reveal())
	s := &hmacSigner{
		parts:  c.Sign,
		header: httpx.NewName(c.Header),
		prefix: []byte(c.Prefix),
		base64: c.Encoding == "base64",
	}
	if c.TimestampHeader != "" {
		s.tsHeader = httpx.NewName(c.TimestampHeader)
	}
	s.hasTS = slices.Contains(c.Sign, PartTimestamp)
	s.hasBody = slices.Contains(c.Sign, PartBody)
	s.macs.New = func() any { return &signState{mac: hmac.New(newHash, key)} }
	return s
}

func (s *hmacSigner) inject(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	if s.hasBody && ex.BodyStreamed() {
		return errSignStreamed
	}
	st := s.macs.Get().(*signState)
	v := s.sign(st, st.out[:0], ctx, ex)
	h := &ctx.Request.Header
	s.header.Del(h)
	s.header.Set(h, v)
	s.macs.Put(st)
	return next.Handle(ctx, ex)
}

// sign appends the header value (prefix and encoded signature) to out and
// sets the timestamp header. st.buf holds the URI and timestamp meanwhile.
func (s *hmacSigner) sign(st *signState, out []byte, ctx *fasthttp.RequestCtx, ex *proxy.Exchange) []byte {
	req := &ctx.Request
	buf := ex.AppendUpstreamURI(st.buf[:0])
	defer func() { st.buf = buf[:0] }()
	uriLen := len(buf)
	path, query := buf[:uriLen], buf[uriLen:uriLen]
	for i, c := range buf {
		if c == '?' {
			path, query = buf[:i], buf[i+1:uriLen]
			break
		}
	}
	var ts []byte
	if s.hasTS || len(s.tsHeader.Bytes()) > 0 {
		buf = strconv.AppendInt(buf, time.Now().Unix(), 10)
		ts = buf[uriLen:]
		if len(s.tsHeader.Bytes()) > 0 {
			s.tsHeader.Del(&req.Header)
			s.tsHeader.Set(&req.Header, ts)
		}
	}
	mac := st.mac
	mac.Reset()
	for i, part := range s.parts {
		if i > 0 {
			mac.Write(newline)
		}
		switch part {
		case PartMethod:
			mac.Write(req.Header.Method())
		case PartPath:
			mac.Write(path)
		case PartQuery:
			mac.Write(query)
		case PartTimestamp:
			mac.Write(ts)
		case PartBody:
			sum := sha256.Sum256(req.Body())
			hex.Encode(st.hex[:], sum[:])
			mac.Write(st.hex[:])
		}
	}
	st.sum = mac.Sum(st.sum[:0])
	sum := st.sum
	out = append(out, s.prefix...)
	if s.base64 {
		out = base64.StdEncoding.AppendEncode(out, sum)
	} else {
		out = hex.AppendEncode(out, sum)
	}
	return out
}

var newline = []byte{'\n'}

// errSignStreamed: a signature over the body needs the whole body in memory
// before the request is sent; a streamed one (server.stream_request_threshold)
// is not. Nothing is sent.
var errSignStreamed = proxy.NewError(proxy.CodeRequestTooLarge,
	"the request body is streamed (longer than server.stream_request_threshold, or chunked) and cannot be HMAC-signed; nothing was sent")
