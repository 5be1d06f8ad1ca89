package contract

import (
	"cmp"
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/sluice-gw/sluice/proxy"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// The kinds of violation: the kind label of the metrics and the kind member
// of each entry of a contract_violation's problems.
const (
	KindUnknownOperation = "unknown_operation" // no operation of the document matches method and path
	KindParameter        = "parameter"         // a path, query, header or cookie parameter is missing or ill-typed
	KindContentType      = "content_type"      // the body's Content-Type is not one the operation accepts or answers
	KindBody             = "body"              // the body does not match the schema
	KindStatus           = "status"            // the answer's status is not documented for the operation
	KindHeader           = "header"            // a documented answer header is missing or ill-typed
	KindOther            = "other"             // anything else kin-openapi reports
)

// maxFindings bounds the violations listed for one call: a body with
// thousands of bad items is answered with the first ones.
const maxFindings = 50

// findings turns kin-openapi's error into violations, each with its kind,
// a JSON pointer and a message that never quotes the value checked.
//
// Pointers: into the body for kind body ("/to/0"); "/path/NAME",
// "/query/NAME", "/header/NAME" or "/cookie/NAME" for a parameter; "/status"
// for a status; "/header/NAME" for an answer header; "/header/Content-Type"
// for a content type; "" for the call as a whole.
//
// They are sorted by pointer, then kind: the JSON Schema validator finds
// the violations of an object's members in no fixed order.
func findings(err error) []proxy.Finding {
	var c collector
	c.walk(err)
	slices.SortFunc(c.out, func(a, b proxy.Finding) int {
		return cmp.Or(strings.Compare(a.Pointer, b.Pointer), strings.Compare(a.Kind, b.Kind), strings.Compare(a.Message, b.Message))
	})
	return c.out
}

type collector struct{ out []proxy.Finding }

func (c *collector) add(kind, pointer, msg string) {
	if len(c.out) >= maxFindings {
		return
	}
	f := proxy.Finding{Kind: kind, Pointer: pointer, Message: msg}
	for _, have := range c.out {
		if have == f {
			return
		}
	}
	c.out = append(c.out, f)
}

func (c *collector) walk(err error) {
	var (
		multi openapi3.MultiError
		reqE  *openapi3filter.RequestError
		resE  *openapi3filter.ResponseError
		schE  *openapi3.SchemaError
	)
	switch {
	case errors.As(err, &multi) && isMulti(err):
		for _, e := range multi {
			c.walk(e)
		}
	case errors.As(err, &reqE):
		c.request(reqE)
	case errors.As(err, &resE):
		c.response(resE)
	case errors.As(err, &schE):
		c.schema(KindBody, "", err)
	default:
		c.add(KindOther, "", err.Error())
	}
}

// isMulti reports whether err itself is a MultiError (errors.As would also
// find one inside a RequestError).
func isMulti(err error) bool {
	_, ok := err.(openapi3.MultiError)
	return ok
}

func (c *collector) request(e *openapi3filter.RequestError) {
	switch {
	case e.Parameter != nil:
		ptr := "/" + e.Parameter.In + "/" + escape(e.Parameter.Name)
		c.schema(KindParameter, ptr, e.Err, parameterReason(e))
	case e.RequestBody != nil && strings.HasPrefix(e.Reason, "header Content-Type has unexpected value"):
		c.add(KindContentType, "/header/Content-Type", e.Reason)
	case e.RequestBody != nil:
		c.schema(KindBody, "", e.Err, requestReason(e))
	default:
		c.add(KindOther, "", e.Error())
	}
}

func requestReason(e *openapi3filter.RequestError) string {
	r := e.Reason
	if r == "" && e.Err != nil {
		r = e.Err.Error()
	}
	return r
}

// parameterReason says what is wrong with a parameter without its value
// (a header parameter may carry a token): kin-openapi's parse errors quote it.
func parameterReason(e *openapi3filter.RequestError) string {
	var pe *openapi3filter.ParseError
	if !errors.As(e.Err, &pe) {
		return requestReason(e)
	}
	reason := ""
	for pe != nil {
		if pe.Reason != "" {
			reason = pe.Reason
		}
		next, ok := pe.Cause.(*openapi3filter.ParseError)
		if !ok {
			break
		}
		pe = next
	}
	if reason == "" {
		return "the value cannot be parsed"
	}
	return "the value is " + reason
}

func (c *collector) response(e *openapi3filter.ResponseError) {
	r := e.Reason
	switch {
	case r == "status is not supported":
		c.add(KindStatus, "/status", "the status is not documented for this operation")
	case strings.HasPrefix(r, "response header Content-Type has unexpected value"):
		c.add(KindContentType, "/header/Content-Type", r)
	case strings.Contains(r, "header "):
		ptr := "/header/"
		if name, ok := quoted(r); ok {
			ptr += escape(name)
		}
		c.schema(KindHeader, ptr, e.Err, r)
	default:
		c.schema(KindBody, "", e.Err, r)
	}
}

// schema adds the schema errors inside err, each at its pointer below
// prefix (for a body, prefix is ""). When err holds none, one violation
// at prefix says reason.
func (c *collector) schema(kind, prefix string, err error, reason ...string) {
	n := len(c.out)
	c.schemaErrs(kind, prefix, err)
	if len(c.out) == n {
		msg := strings.Join(reason, "")
		if msg == "" && err != nil {
			msg = err.Error()
		}
		c.add(kind, prefix, msg)
	}
}

func (c *collector) schemaErrs(kind, prefix string, err error) {
	if err == nil {
		return
	}
	if multi, ok := err.(openapi3.MultiError); ok {
		for _, e := range multi {
			c.schemaErrs(kind, prefix, e)
		}
		return
	}
	var se *openapi3.SchemaError
	if !errors.As(err, &se) {
		return
	}
	// Errors of the JSON Schema 2020-12 validator (OpenAPI 3.1) come as a
	// tree: the violations are its leaves.
	var sub openapi3.MultiError
	if se.Origin != nil && errors.As(se.Origin, &sub) {
		n := len(c.out)
		for _, e := range sub {
			c.schemaErrs(kind, prefix, e)
		}
		if len(c.out) > n {
			return
		}
	}
	ptr := prefix
	if kind == KindBody {
		for _, k := range se.JSONPointer() {
			ptr += "/" + escape(k)
		}
	}
	c.add(kind, ptr, schemaMessage(se))
}

var printer = message.NewPrinter(language.English)

// schemaMessage says what is wrong, without the path (the pointer says it)
// and without the value.
func schemaMessage(se *openapi3.SchemaError) string {
	var ve *jsonschema.ValidationError
	if errors.As(se, &ve) {
		return ve.ErrorKind.LocalizedString(printer)
	}
	if se.Reason == "" {
		return "does not match the schema"
	}
	return se.Reason
}

// escape escapes a JSON pointer token (RFC 6901).
func escape(s string) string {
	if !strings.ContainsAny(s, "~/") {
		return s
	}
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// quoted returns the first double-quoted Go string in s.
func quoted(s string) (string, bool) {
	i := strings.IndexByte(s, '"')
	if i < 0 {
		return "", false
	}
	q, err := strconv.QuotedPrefix(s[i:])
	if err != nil {
		return "", false
	}
	v, err := strconv.Unquote(q)
	return v, err == nil
}
