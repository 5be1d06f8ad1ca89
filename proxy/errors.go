package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// Code is the stable, machine-readable kind of a gateway error: the "code"
// member of every problem+json body. The set and the names are fixed (docs/errors.md).
type Code uint8

// The error codes. Each has a default HTTP status (see Code.Status).
const (
	CodeInternalError       Code = iota // 500: a bug or a panic inside the gateway
	CodeRouteNotFound                   // 404: no route matches the request
	CodeMethodNotAllowed                // 405: a route matches the path, not the method
	CodeBadRequest                      // 400: malformed request
	CodeRequestTooLarge                 // 413 (body) or 431 (headers)
	CodeUnauthorized                    // 401
	CodeForbidden                       // 403
	CodeRateLimited                     // 429: a Sluice limit
	CodeUpstreamRateLimited             // 429: the provider's limit
	CodeCircuitOpen                     // 503
	CodeUpstreamTimeout                 // 504
	CodeUpstreamUnreachable             // 502
	CodeUpstreamError                   // upstream 5xx (status kept)
	CodeUpstreamClientError             // upstream 4xx (status kept)
	CodeOverloaded                      // 503: a Sluice capacity limit
	CodeUpstreamAuthFailed              // 502: the provider's credentials could not be obtained (token endpoint)
	CodeNotCached                       // 504: only-if-cached and nothing usable stored (RFC 9111 5.2.1.7)
	CodeContractViolation               // 400: the request does not match the provider's OpenAPI document (contract)
	CodeUpgradeNotAllowed               // 403: Connection: Upgrade on a route without upgrade: true
	numCodes
)

// retryClass says whether a caller may send the same request again.
type retryClass uint8

const (
	retryNever      retryClass = iota
	retryAlways                // nothing reached the provider, or it asked to be retried
	retryIdempotent            // the provider may have acted: only idempotent requests
)

var codeInfo = [numCodes]struct {
	name   string
	status int
	retry  retryClass
}{
	CodeInternalError:       {"internal_error", 500, retryNever},
	CodeRouteNotFound:       {"route_not_found", 404, retryNever},
	CodeMethodNotAllowed:    {"method_not_allowed", 405, retryNever},
	CodeBadRequest:          {"bad_request", 400, retryNever},
	CodeRequestTooLarge:     {"request_too_large", 413, retryNever},
	CodeUnauthorized:        {"unauthorized", 401, retryNever},
	CodeForbidden:           {"forbidden", 403, retryNever},
	CodeRateLimited:         {"rate_limited", 429, retryAlways},
	CodeUpstreamRateLimited: {"upstream_rate_limited", 429, retryAlways},
	CodeCircuitOpen:         {"circuit_open", 503, retryAlways},
	CodeUpstreamTimeout:     {"upstream_timeout", 504, retryIdempotent},
	CodeUpstreamUnreachable: {"upstream_unreachable", 502, retryIdempotent},
	CodeUpstreamError:       {"upstream_error", 502, retryIdempotent},
	CodeUpstreamClientError: {"upstream_client_error", 400, retryNever},
	CodeOverloaded:          {"overloaded", 503, retryAlways},
	// Nothing reached the provider: the token endpoint failed first.
	CodeUpstreamAuthFailed: {"upstream_auth_failed", 502, retryAlways},
	// The caller asked for a stored answer only; nothing was sent upstream.
	CodeNotCached: {"not_cached", 504, retryNever},
	// Refused before reaching the provider; the same request fails again.
	CodeContractViolation: {"contract_violation", 400, retryNever},
	// Refused before reaching the provider: the route does not tunnel.
	CodeUpgradeNotAllowed: {"upgrade_not_allowed", 403, retryNever},
}

// String returns the code's wire name, e.g. "route_not_found".
func (c Code) String() string {
	if c >= numCodes {
		return fmt.Sprintf("code(%d)", c)
	}
	return codeInfo[c].name
}

// Status returns the code's default HTTP status.
func (c Code) Status() int {
	if c >= numCodes {
		return 500
	}
	return codeInfo[c].status
}

// Error is the one error type of the request path. Plugins and the upstream
// client return it (or any error, which Classify maps to one); the route
// renders it once, as problem+json. Create it with NewError or Errorf.
type Error struct {
	Code Code
	// Status overrides Code.Status() when non-zero (e.g. 431 for headers too large).
	Status int
	// Detail is the human-readable explanation sent to the caller. It must
	// never contain a secret.
	Detail string
	// RetryAfter, when positive, becomes the Retry-After header and the
	// retry_after member (whole seconds, rounded up). 429 and 503 answers
	// without one get 1s.
	RetryAfter time.Duration
	// Err is the cause, logged but never sent to the caller.
	Err error
	// Header holds headers the answer needs besides the problem body: Allow
	// on a 405, WWW-Authenticate on a 401. Set them with WithHeader when the
	// error is built (once, for a prebuilt error): writing them allocates
	// nothing.
	Header []HeaderField
	// Problems are the individual findings behind the error, listed in the
	// problems member of the body (contract_violation: one per violation).
	Problems []Finding

	retry retryClass
}

// HeaderField is one header of an error's answer.
type HeaderField struct{ Name, Value []byte }

// WithHeader adds a header to the error's answer and returns e.
func (e *Error) WithHeader(name, value string) *Error {
	e.Header = append(e.Header, HeaderField{[]byte(name), []byte(value)})
	return e
}

// NewError returns an *Error with the code's default status and retry rule.
func NewError(code Code, detail string) *Error {
	e := &Error{Code: code, Detail: detail}
	if code < numCodes {
		e.retry = codeInfo[code].retry
	}
	return e
}

// Errorf is NewError with a formatted detail.
func Errorf(code Code, format string, args ...any) *Error {
	return NewError(code, fmt.Sprintf(format, args...))
}

// HTTPStatus is the status the caller receives.
func (e *Error) HTTPStatus() int {
	if e.Status != 0 {
		return e.Status
	}
	return e.Code.Status()
}

// Retryable reports whether the caller may send the same request again; for
// errors where the provider may already have acted, only when the method is
// idempotent or the request carries an Idempotency-Key.
func (e *Error) Retryable(req *fasthttp.Request) bool {
	switch e.retry {
	case retryAlways:
		return true
	case retryIdempotent:
		return IsIdempotent(req)
	}
	return false
}

func (e *Error) Error() string {
	msg := e.Code.String()
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// IsIdempotent reports whether req may be sent twice without a second effect:
// its method is idempotent (RFC 9110 §9.2.2) or it carries an Idempotency-Key.
func IsIdempotent(req *fasthttp.Request) bool {
	switch string(req.Header.Method()) {
	case fasthttp.MethodGet, fasthttp.MethodHead, fasthttp.MethodOptions, fasthttp.MethodTrace,
		fasthttp.MethodPut, fasthttp.MethodDelete:
		return true
	}
	return len(req.Header.Peek("Idempotency-Key")) > 0
}

// Prebuilt errors for the cases whose detail never varies: returning them
// costs no allocation.
var (
	errOverloaded  = &Error{Code: CodeOverloaded, Detail: "the gateway is serving its maximum number of requests", RetryAfter: time.Second, retry: retryAlways}
	errDeadline    = &Error{Code: CodeUpstreamTimeout, Detail: "the route's deadline passed before the upstream answered", retry: retryIdempotent}
	errDotSegment  = &Error{Code: CodeBadRequest, Detail: "the path contains a '.' or '..' segment"}
	errHeaderName  = &Error{Code: CodeBadRequest, Detail: "a header name contains a character that is not allowed"}
	errHTTPVersion = &Error{Code: CodeBadRequest, Status: 505, Detail: "only HTTP/1.x requests are served here"}
	errHost        = &Error{Code: CodeBadRequest, Detail: "the Host header is missing or not a valid host[:port]"}
	// RFC 9110 §10.1.1: an expectation the gateway cannot meet is refused,
	// not forwarded for the provider to meet.
	errExpect = &Error{Code: CodeBadRequest, Status: 417, Detail: "the Expect header supports only 100-continue"}
	// A method override would make the provider run another method than the
	// one routed, authorized, cached, retried and rate-limited here.
	errMethodOverride = &Error{Code: CodeBadRequest,
		Detail: "X-HTTP-Method-Override, X-HTTP-Method and X-Method-Override are not accepted: send the method itself"}
)

// transportError marks an error returned by the upstream client, so that
// Classify can tell a malformed upstream response from a bug in a plugin.
type transportError struct{ err error }

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// Classify maps any error from the request path to an *Error. It is the one
// place where errors get their code:
//
//	*Error                           -> itself
//	fasthttp.ErrTimeout, deadlines   -> upstream_timeout (504)
//	dial failures, refused, DNS      -> upstream_unreachable (502), always retryable
//	connection closed or reset       -> upstream_unreachable (502)
//	fasthttp.ErrNoFreeConns          -> overloaded (503): upstream max_conns reached
//	response body too large          -> upstream_error (502)
//	other upstream client errors     -> upstream_error (502): malformed response
//	anything else                    -> internal_error (500)
func Classify(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var te *transportError
	if !errors.As(err, &te) {
		return &Error{Code: CodeInternalError, Detail: "internal error", Err: err}
	}
	switch {
	case errors.Is(err, fasthttp.ErrDialTimeout):
		return &Error{Code: CodeUpstreamUnreachable, Detail: "connecting to the upstream timed out", Err: err, retry: retryAlways}
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, os.ErrDeadlineExceeded):
		return &Error{Code: CodeUpstreamTimeout, Detail: "the upstream did not answer in time", Err: err, retry: retryIdempotent}
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return &Error{Code: CodeOverloaded, Detail: "all connections to the upstream are busy (max_conns)", Err: err, RetryAfter: time.Second, retry: retryAlways}
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return &Error{Code: CodeUpstreamError, Status: 502, Detail: "the upstream response is larger than max_response_body", Err: err}
	case isTLSError(err):
		return &Error{Code: CodeUpstreamUnreachable, Detail: "TLS with the upstream failed: " + tlsReason(err), Err: err}
	case isDialError(err):
		return &Error{Code: CodeUpstreamUnreachable, Detail: "cannot connect to the upstream", Err: err, retry: retryAlways}
	case errors.Is(err, fasthttp.ErrConnectionClosed), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), isNetError(err):
		return &Error{Code: CodeUpstreamUnreachable, Detail: "the upstream closed the connection", Err: err, retry: retryIdempotent}
	}
	return &Error{Code: CodeUpstreamError, Status: 502, Detail: "the upstream sent an invalid HTTP response", Err: err, retry: retryIdempotent}
}

func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}

func isTLSError(err error) bool {
	var (
		unknownCA x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
		hostname  x509.HostnameError
		record    tls.RecordHeaderError
		alert     tls.AlertError
		verify    *tls.CertificateVerificationError
	)
	return errors.As(err, &unknownCA) || errors.As(err, &invalid) || errors.As(err, &hostname) ||
		errors.As(err, &record) || errors.As(err, &alert) || errors.As(err, &verify)
}

// tlsReason says what went wrong in words that carry no secret.
func tlsReason(err error) string {
	var (
		unknownCA x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
		hostname  x509.HostnameError
	)
	switch {
	case errors.As(err, &unknownCA):
		return "the certificate is not signed by a trusted CA (see tls.ca_file)"
	case errors.As(err, &hostname):
		return "the certificate is not valid for the host name (see tls.server_name)"
	case errors.As(err, &invalid):
		return "the certificate is invalid or expired"
	}
	return "handshake failed"
}

func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

// Codes lists every error code, in order.
func Codes() []Code {
	out := make([]Code, numCodes)
	for i := range out {
		out[i] = Code(i)
	}
	return out
}

// ParseCode returns the code whose wire name is name ("circuit_open").
func ParseCode(name string) (Code, bool) {
	for i := range numCodes {
		if codeInfo[i].name == name {
			return i, true
		}
	}
	return 0, false
}
