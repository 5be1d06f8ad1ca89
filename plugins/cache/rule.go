package cache

import (
	"fmt"
	"net/http"
	"strings"
)

// pattern is a route-style path pattern: literal segments, {name} for one
// segment, {name:*} for the rest of the path.
type pattern struct {
	segs []string // literal, or "{name}" / "{name:*}"
}

func compilePattern(p string) pattern {
	return pattern{segs: strings.Split(strings.TrimPrefix(p, "/"), "/")}
}

// match returns the parameters of path, or ok false.
func (p *pattern) match(path string) (params map[string]string, ok bool) {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for i, s := range p.segs {
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			name, mod, _ := strings.Cut(s[1:len(s)-1], ":")
			if params == nil {
				params = map[string]string{}
			}
			if mod == "*" {
				params[name] = strings.Join(parts[min(i, len(parts)):], "/")
				return params, true
			}
			if i >= len(parts) || parts[i] == "" {
				return nil, false
			}
			params[name] = parts[i]
			continue
		}
		if i >= len(parts) || parts[i] != s {
			return nil, false
		}
	}
	return params, len(parts) == len(p.segs)
}

// fill replaces {name} in templates with params.
func fill(templates []string, params map[string]string, out []string) []string {
	for _, t := range templates {
		out = append(out, paramRE.ReplaceAllStringFunc(t, func(m string) string {
			return params[paramRE.FindStringSubmatch(m)[1]]
		}))
	}
	return out
}

// rule is a compiled invalidate rule.
type rule struct {
	methods []string
	path    pattern
	tags    []string
}

func compileRule(r Rule) (rule, error) {
	if r.Path == "" {
		return rule{}, fmt.Errorf("path is required")
	}
	cr := rule{methods: r.Methods, path: compilePattern(r.Path), tags: r.Tags}
	if len(cr.methods) == 0 {
		cr.methods = []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}
	}
	return cr, nil
}

// match appends the rule's tags to out when method and path match.
func (r *rule) match(method, path []byte, out []string) []string {
	found := false
	for _, m := range r.methods {
		if m == string(method) {
			found = true
			break
		}
	}
	if !found {
		return out
	}
	params, ok := r.path.match(string(path))
	if !ok {
		return out
	}
	return fill(r.tags, params, out)
}
