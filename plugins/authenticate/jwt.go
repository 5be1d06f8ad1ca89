package authenticate

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
)

// JWTConfig accepts signed JWT bearer tokens (RFC 7519) from a trusted
// issuer. Exactly one key source: secret (HS256), jwks_file or jwks_url.
type JWTConfig struct {
	// Secret is the shared key of HS256 tokens.
	Secret config.Secret `koanf:"secret" json:"secret,omitempty"`
	// JWKSFile is a JSON Web Key Set (RFC 7517) on disk, read when the config
	// loads: RSA keys (RS256) and P-256 EC keys (ES256).
	JWKSFile string `koanf:"jwks_file" json:"jwks_file,omitempty"`
	// JWKSURL is a JSON Web Key Set fetched at start and every JWKSRefresh
	// (and at most every 30s when a token names a key id not in the set).
	JWKSURL string `koanf:"jwks_url" json:"jwks_url,omitempty"`
	// JWKSRefresh is how often JWKSURL is fetched again. Default 5m.
	JWKSRefresh config.Duration `koanf:"jwks_refresh" json:"jwks_refresh,omitempty"`
	// Algorithms accepted. Default [HS256] with secret, [RS256, ES256] with a JWKS.
	Algorithms []string `koanf:"algorithms" json:"algorithms,omitempty"`
	// Issuer, when set, must equal the iss claim.
	Issuer string `koanf:"issuer" json:"issuer,omitempty"`
	// Audience, when set, must be in the aud claim.
	Audience string `koanf:"audience" json:"audience,omitempty"`
	// ConsumerClaim names the claim that holds the consumer. Default "sub".
	ConsumerClaim string `koanf:"consumer_claim" json:"consumer_claim,omitempty"`
	// Leeway tolerates clock skew on exp, nbf and iat. Default 0s.
	Leeway config.Duration `koanf:"leeway" json:"leeway,omitempty"`
}

var jwtAlgorithms = []string{"HS256", "RS256", "ES256"}

func (c *JWTConfig) validate(prefix string, p *config.Problems) {
	sources := 0
	for _, set := range []bool{c.Secret.IsSet(), c.JWKSFile != "", c.JWKSURL != ""} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		p.Add(prefix, "set exactly one of secret (HS256), jwks_file or jwks_url")
	}
	if c.JWKSURL != "" {
		if err := config.CheckHTTPURL(c.JWKSURL); err != nil {
			p.AddErr(prefix+".jwks_url", err)
		}
	}
	if c.JWKSRefresh == 0 {
		c.JWKSRefresh = config.Duration(5 * time.Minute)
	}
	if c.JWKSRefresh.D() < time.Second {
		p.Add(prefix+".jwks_refresh", "must be at least 1s")
	}
	if len(c.Algorithms) == 0 {
		if c.Secret.IsSet() {
			c.Algorithms = []string{"HS256"}
		} else {
			c.Algorithms = []string{"RS256", "ES256"}
		}
	}
	for i, a := range c.Algorithms {
		key := fmt.Sprintf("%s.algorithms[%d]", prefix, i)
		switch {
		case !slices.Contains(jwtAlgorithms, a):
			p.Addf(key, "unsupported algorithm %q: want HS256, RS256 or ES256", a)
		case a == "HS256" && !c.Secret.IsSet():
			p.Add(key, "HS256 needs secret")
		case a != "HS256" && c.Secret.IsSet():
			p.Addf(key, "%s needs a JWKS (jwks_file or jwks_url), not secret", a)
		}
	}
	if c.ConsumerClaim == "" {
		c.ConsumerClaim = "sub"
	}
}

// keySet is a parsed JWKS: keys by id, and all of them for tokens without kid.
type keySet struct {
	byID map[string]any
	all  []any
}

// jwtVerifier checks tokens against its config and current keys.
type jwtVerifier struct {
	cfg    *JWTConfig
	parser *jwt.Parser
	keys   *keySource // the secret's, the file's, or the URL's shared source
	hmac   []byte

	externalOK  bool     // route accepts any consumer: unknown subjects pass
	externalCon sync.Map // subject -> *consumer, bounded below
	externalN   atomic.Int64
}

// keySource holds a key set. For jwks_url it is shared by every route with
// the same URL and refresh interval (across reloads too): one download and
// one refresher per identity provider, not one per route.
type keySource struct {
	url     string // "" for a fixed set (jwks_file, secret)
	refresh time.Duration
	log     *slog.Logger
	client  *http.Client
	keys    atomic.Pointer[keySet]

	stop      chan struct{}
	done      chan struct{}
	kick      chan struct{} // asks the refresher for an early fetch (unknown kid)
	lastFetch atomic.Int64  // unix nanos of the latest fetch attempt
}

// jwksKey names a shared key source: routes with the same URL and refresh
// share one download and one refresher.
type jwksKey struct {
	url     string
	refresh config.Duration
}

func newJWTVerifier(c *JWTConfig, b *proxy.Build, openRoute bool) (*jwtVerifier, error) {
	opts := []jwt.ParserOption{jwt.WithValidMethods(c.Algorithms), jwt.WithExpirationRequired(), jwt.WithLeeway(c.Leeway.D())}
	if c.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(c.Issuer))
	}
	if c.Audience != "" {
		opts = append(opts, jwt.WithAudience(c.Audience))
	}
	v := &jwtVerifier{cfg: c, parser: jwt.NewParser(opts...), externalOK: openRoute}
	switch {
	case c.Secret.IsSet():
		v.hmac = []byte(c.Secret.Reveal())
	case c.JWKSFile != "":
		raw, err := os.ReadFile(c.JWKSFile)
		if err != nil {
			return nil, &config.FieldError{Path: "jwt.jwks_file", Msg: fmt.Sprintf("cannot read %q: %v", c.JWKSFile, err)}
		}
		ks, err := parseJWKS(raw)
		if err != nil {
			return nil, &config.FieldError{Path: "jwt.jwks_file", Msg: fmt.Sprintf("%s: %v", c.JWKSFile, err)}
		}
		v.keys = &keySource{}
		v.keys.keys.Store(ks)
	case c.JWKSURL != "":
		v.keys = proxy.Share(b, jwksKey{c.JWKSURL, c.JWKSRefresh}, func() *keySource {
			ks := &keySource{url: c.JWKSURL, refresh: c.JWKSRefresh.D(), log: b.Logger, kick: make(chan struct{}, 1),
				client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: http.ProxyFromEnvironment}}}
			ks.keys.Store(&keySet{byID: map[string]any{}})
			return ks
		})
	}
	return v, nil
}

var errNoKey = errors.New("no key for this token")

// verify checks the token and returns the consumer named by its claim.
func (v *jwtVerifier) verify(raw []byte) (string, error) {
	claims := jwt.MapClaims{}
	_, err := v.parser.ParseWithClaims(string(raw), claims, v.keyFor)
	if err != nil {
		return "", err
	}
	name, _ := claims[v.cfg.ConsumerClaim].(string)
	if name == "" || len(name) > 128 || !printable(name) {
		return "", fmt.Errorf("claim %s is missing or not a printable string", v.cfg.ConsumerClaim)
	}
	if name == config.AnonymousConsumer { // reserved for calls without credentials
		return "", fmt.Errorf("claim %s names the reserved consumer %q", v.cfg.ConsumerClaim, name)
	}
	return name, nil
}

func (v *jwtVerifier) keyFor(t *jwt.Token) (any, error) {
	if v.hmac != nil {
		return v.hmac, nil
	}
	ks := v.keys.keys.Load()
	kid, _ := t.Header["kid"].(string)
	if kid != "" {
		if k, ok := ks.byID[kid]; ok {
			return k, nil
		}
		v.keys.requestRefresh()
		return nil, errNoKey
	}
	// No kid: the keys of the set that fit the algorithm (golang-jwt tries each).
	var fit jwt.VerificationKeySet
	for _, k := range ks.all {
		switch k.(type) {
		case *rsa.PublicKey:
			if t.Method.Alg() == "RS256" {
				fit.Keys = append(fit.Keys, k)
			}
		case *ecdsa.PublicKey:
			if t.Method.Alg() == "ES256" {
				fit.Keys = append(fit.Keys, k)
			}
		}
	}
	if len(fit.Keys) == 0 {
		return nil, errNoKey
	}
	return fit, nil
}

// external returns the consumer for a verified subject that is not among the
// configured consumers: accepted as-is (by its claim) on routes that do not
// restrict consumers, refused on routes that do.
func (v *jwtVerifier) external(name string) *consumer {
	if c, ok := v.externalCon.Load(name); ok {
		return c.(*consumer)
	}
	c := &consumer{name: name, allowed: v.externalOK}
	if v.externalN.Load() < 10000 { // bound the memo; beyond it, allocate per call
		v.externalN.Add(1)
		v.externalCon.Store(name, c)
	}
	return c
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// jwk is one key of a JWKS (the members used here).
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS reads the RSA and P-256 EC signing keys of a JWKS; other keys
// (encryption keys, other curves) are skipped.
func parseJWKS(raw []byte) (*keySet, error) {
	var doc struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("not a JWKS: %v", err)
	}
	ks := &keySet{byID: map[string]any{}}
	for i, k := range doc.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		var key any
		switch k.Kty {
		case "RSA":
			n, err1 := b64int(k.N)
			e, err2 := b64int(k.E)
			if err1 != nil || err2 != nil || !e.IsInt64() || n.BitLen() < 2048 {
				return nil, fmt.Errorf("keys[%d]: invalid RSA key (n, e; at least 2048 bits)", i)
			}
			key = &rsa.PublicKey{N: n, E: int(e.Int64())}
		case "EC":
			if k.Crv != "P-256" {
				continue
			}
			// SEC 1 uncompressed point: 0x04 || X || Y, each coordinate
			// left-padded to 32 bytes (RFC 7518 asks for the full size; some
			// issuers drop leading zeros, which is still the same number).
			point := make([]byte, 1, 65)
			point[0] = 4
			x, err1 := b64coord(k.X, 32)
			y, err2 := b64coord(k.Y, 32)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("keys[%d]: invalid EC key (x, y)", i)
			}
			pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append(point, x...), y...))
			if err != nil { // off the curve, or the point at infinity
				return nil, fmt.Errorf("keys[%d]: EC point is not on P-256", i)
			}
			key = pub
		default:
			continue
		}
		if k.Kid != "" {
			ks.byID[k.Kid] = key
		}
		ks.all = append(ks.all, key)
	}
	if len(ks.all) == 0 {
		return nil, errors.New("no RSA or P-256 signing key in the set")
	}
	return ks, nil
}

// b64coord decodes a base64url curve coordinate, left-padded to size bytes.
func b64coord(s string, size int) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 || len(b) > size {
		return nil, errors.New("bad base64url coordinate")
	}
	return append(make([]byte, size-len(b), size), b...), nil
}

func b64int(s string) (*big.Int, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 {
		return nil, errors.New("bad base64url integer")
	}
	return new(big.Int).SetBytes(b), nil
}

// Start fetches the URL key set once (tokens are refused until it has keys)
// and starts the background refresh. The gateway calls it once, when the
// first config that uses the source starts serving (see proxy.Share).
func (s *keySource) Start() error {
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	s.fetch()
	go s.refresher(s.stop, s.done)
	return nil
}

// Close stops the refresher, once the last config that used the source is
// retired.
func (s *keySource) Close() error {
	close(s.stop)
	<-s.done
	return nil
}

func (s *keySource) requestRefresh() {
	if s.url == "" || time.Since(time.Unix(0, s.lastFetch.Load())) < 30*time.Second {
		return
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *keySource) refresher(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(s.refresh)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		case <-s.kick:
		}
		s.fetch()
	}
}

func (s *keySource) fetch() {
	s.lastFetch.Store(time.Now().UnixNano())
	ks, err := s.download()
	if err != nil {
		if s.log != nil {
			s.log.Warn("fetching JWKS failed; keeping the previous keys", "jwks_url", s.url, "error", err.Error())
		}
		return
	}
	s.keys.Store(ks)
}

func (s *keySource) download() (*keySet, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, errors.New("cannot reach the JWKS URL")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the JWKS URL answered %d", resp.StatusCode)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	return parseJWKS(raw)
}
