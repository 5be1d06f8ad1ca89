package cache

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/sluice-gw/sluice/proxy"
	"github.com/valyala/fasthttp"
)

// webhook is a compiled webhook block: the route answers signed provider
// webhooks by purging the tags found in their payload.
type webhook struct {
	secret      []byte
	timestamped bool
	header      []byte
	tolerance   time.Duration
	tags        []tagTemplate
	now         func() time.Time
}

func newWebhook(w *WebhookConfig) (*webhook, error) {
	h := &webhook{secret: []byte(w.Secret.Reveal()), timestamped: w.Scheme == "timestamped",
		header: []byte(w.Header), tolerance: w.Tolerance.D(), now: time.Now}
	for i, t := range w.Tags {
		tt, err := parseTagTemplate(t)
		if err != nil {
			return nil, fmt.Errorf("webhook.tags[%d]: %w", i, err)
		}
		h.tags = append(h.tags, tt)
	}
	return h, nil
}

var errSignature = proxy.NewError(proxy.CodeUnauthorized, "the webhook signature is missing, malformed, stale or does not match")

// handle verifies and applies one webhook; the upstream is never called.
func (w *webhook) handle(ctx *fasthttp.RequestCtx, _ *proxy.Exchange, s *Store) error {
	if !ctx.IsPost() {
		e := proxy.NewError(proxy.CodeMethodNotAllowed, "webhooks are delivered with POST")
		e.Allow = "POST"
		return e
	}
	body := ctx.Request.Body()
	if !w.verify(ctx.Request.Header.PeekBytes(w.header), body) {
		return errSignature
	}
	var doc any
	if err := json.Unmarshal(body, &doc); err != nil {
		return proxy.NewError(proxy.CodeBadRequest, "the webhook payload is not valid JSON")
	}
	tags := w.extract(doc)
	n := 0
	if len(tags) > 0 {
		n = s.invalidate(Invalidation{Source: "webhook", Tags: tags})
	}
	out, _ := json.Marshal(map[string]any{"purged": n, "tags": nonNil(tags)})
	ctx.Response.Reset()
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	ctx.SetBody(out)
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// verify checks the signature header against the body.
func (w *webhook) verify(sig, body []byte) bool {
	if len(sig) == 0 {
		return false
	}
	if !w.timestamped {
		sig = bytes.TrimPrefix(bytes.TrimSpace(sig), []byte("sha256="))
		return w.match(sig, nil, body)
	}
	// t=UNIX,v1=HEX[,v1=HEX...]
	var ts []byte
	var sigs [][]byte
	for _, part := range bytes.Split(sig, []byte{','}) {
		k, v, ok := bytes.Cut(bytes.TrimSpace(part), []byte{'='})
		if !ok {
			continue
		}
		switch string(k) {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	t, err := strconv.ParseInt(string(ts), 10, 64)
	if err != nil || len(sigs) == 0 {
		return false
	}
	if d := w.now().Sub(time.Unix(t, 0)); d > w.tolerance || d < -w.tolerance {
		return false
	}
	for _, s := range sigs {
		if w.match(s, append(ts, '.'), body) {
			return true
		}
	}
	return false
}

// match compares hex sig with HMAC-SHA256(secret, prefix + body) in constant time.
func (w *webhook) match(sig, prefix, body []byte) bool {
	got := make([]byte, hex.DecodedLen(len(sig)))
	if _, err := hex.Decode(got, sig); err != nil {
		return false
	}
	m := hmac.New(sha256.New, w.secret)
	m.Write(prefix)
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}

// extract evaluates the tag templates against the payload.
func (w *webhook) extract(doc any) []string {
	var out []string
	for _, t := range w.tags {
		vals := []string{""}
		for _, p := range t.parts {
			if p.ptr == nil {
				for i := range vals {
					vals[i] += p.lit
				}
				continue
			}
			v, ok := p.ptr.Eval(doc)
			if !ok {
				vals = nil
				break
			}
			var subs []string
			switch x := v.(type) {
			case []any:
				for _, e := range x {
					if s, ok := scalar(e); ok {
						subs = append(subs, s)
					}
				}
			default:
				if s, ok := scalar(x); ok {
					subs = []string{s}
				}
			}
			var next []string
			for _, prefix := range vals {
				for _, s := range subs {
					next = append(next, prefix+s)
				}
			}
			vals = next
		}
		for _, v := range vals {
			if v != "" {
				out = append(out, v)
			}
		}
	}
	return out
}

func scalar(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, x != ""
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(x), true
	}
	return "", false
}
