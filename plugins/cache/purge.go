package cache

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
)

// purgeRequest is the body of POST /admin/cache/purge.
type purgeRequest struct {
	Keys   []string `json:"keys"`
	Prefix string   `json:"prefix"`
	Tags   []string `json:"tags"`
	All    bool     `json:"all"`
}

// purgeHandler serves POST /admin/cache/purge (the admin token is checked
// by the gateway). keys match the normalised request URI entries record
// (the caller's path, then the query as the route keys it: see
// buildKey), as written or with the query sorted.
func (s *Store) purgeHandler(w http.ResponseWriter, r *http.Request) {
	var req purgeRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		adminProblem(w, r, http.StatusBadRequest, "the body must be JSON: {\"keys\":[...]}, {\"prefix\":\"/...\"}, {\"tags\":[...]} or {\"all\":true}: "+err.Error())
		return
	}
	inv := Invalidation{Source: "admin", Prefix: req.Prefix, Tags: req.Tags, All: req.All}
	for _, k := range req.Keys {
		inv.URIs = append(inv.URIs, k)
		if s := sortedQuery(k); s != k {
			inv.URIs = append(inv.URIs, s)
		}
	}
	if inv.empty() {
		adminProblem(w, r, http.StatusBadRequest, "nothing to purge: give keys, prefix, tags or all")
		return
	}
	for _, k := range req.Keys {
		if !strings.HasPrefix(k, "/") {
			adminProblem(w, r, http.StatusBadRequest, "keys are request paths starting with '/', e.g. \"/github/repos/x?page=2\"")
			return
		}
	}
	if req.Prefix != "" && !strings.HasPrefix(req.Prefix, "/") {
		adminProblem(w, r, http.StatusBadRequest, "prefix is a request path starting with '/', e.g. \"/github/\"")
		return
	}
	n := s.invalidate(inv)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{"purged": n})
}

// sortedQuery returns uri with its query parameters sorted (the form routes
// with sorted: true store).
func sortedQuery(uri string) string {
	path, q, ok := strings.Cut(uri, "?")
	if !ok {
		return uri
	}
	params := strings.Split(q, "&")
	params = slices.DeleteFunc(params, func(s string) bool { return s == "" })
	slices.SortStableFunc(params, func(a, b string) int { // as keys sort: by name, stable
		return compareParamNames([]byte(a), []byte(b))
	})
	if len(params) == 0 {
		return path
	}
	return path + "?" + strings.Join(params, "&")
}

func adminProblem(w http.ResponseWriter, r *http.Request, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"type": "about:blank", "title": http.StatusText(status), "status": status,
		"code": "bad_request", "detail": detail, "instance": r.URL.Path, "retryable": false,
	})
}
