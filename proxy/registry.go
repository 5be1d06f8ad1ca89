package proxy

import (
	"fmt"
	"reflect"
	"slices"

	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/valyala/fasthttp"
)

// Registry is the pipeline: the known plugins and the order of their parts.
type Registry struct {
	byName map[string]*Factory
	order  []place
	rank   map[place]int
	keys   map[string]*Factory // top-level sections by key
}

// NewRegistry returns the pipeline of the given places, outermost first: a
// request passes them in this order and the answer comes back through them
// in reverse. The order is the gateway's, not the YAML's, so that a config
// cannot, say, put caching in front of authentication. It panics on a
// duplicate, on a part placed twice or not at all, or on two plugins
// claiming one section: that is a programming error.
func NewRegistry(places ...Place) *Registry {
	r := &Registry{byName: map[string]*Factory{}, rank: map[place]int{}, keys: map[string]*Factory{}}
	for _, pl := range places {
		p := pl.at()
		if p.f.name == "" || p.f.build == nil {
			panic(fmt.Sprintf("proxy: incomplete plugin factory %q", p.f.name))
		}
		if other, ok := r.byName[p.f.name]; ok && other != p.f {
			panic(fmt.Sprintf("proxy: two plugins named %q", p.f.name))
		}
		if _, dup := r.rank[p]; dup {
			panic(fmt.Sprintf("proxy: part %q of plugin %q placed twice", p.part, p.f.name))
		}
		r.byName[p.f.name] = p.f
		r.rank[p] = len(r.order)
		r.order = append(r.order, p)
	}
	for _, f := range r.byName {
		for _, part := range f.parts {
			if _, ok := r.rank[place{f, part}]; !ok {
				panic(fmt.Sprintf("proxy: part %q of plugin %q is not placed", part, f.name))
			}
		}
		if f.section != nil {
			if other, dup := r.keys[f.section.key]; dup {
				panic(fmt.Sprintf("proxy: plugins %q and %q both own section %q", other.name, f.name, f.section.key))
			}
			if slices.Contains(config.TopLevelKeys(), f.section.key) {
				panic(fmt.Sprintf("proxy: plugin %q claims the gateway's own section %q", f.name, f.section.key))
			}
			r.keys[f.section.key] = f
		}
	}
	return r
}

// Replace returns a copy of the registry where f takes the places of the
// plugin with its name (a stand-in, in tests): the places of the parts f
// has; the old plugin's other parts are left out.
func (r *Registry) Replace(f *Factory) *Registry {
	old, ok := r.byName[f.name]
	if !ok {
		panic(fmt.Sprintf("proxy: no plugin %q to replace", f.name))
	}
	var places []Place
	for _, p := range r.order {
		if p.f == old {
			if !slices.Contains(f.parts, p.part) {
				continue
			}
			p.f = f
		}
		places = append(places, p)
	}
	return NewRegistry(places...)
}

// Lookup returns the factory registered under name.
func (r *Registry) Lookup(name string) (*Factory, bool) {
	f, ok := r.byName[name]
	return f, ok
}

// Names lists the registered plugin names, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.byName))
	for n := range r.byName {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Stages lists the pipeline's places, outermost first, as "name" for a
// plugin's main part and "name.part" for its others.
func (r *Registry) Stages() []string {
	out := make([]string, len(r.order))
	for i, p := range r.order {
		out[i] = p.f.name
		if p.part != "" {
			out[i] += "." + p.part
		}
	}
	return out
}

func (r *Registry) unknown(name string) string {
	return fmt.Sprintf("unknown plugin %q%s", name, config.Suggest(name, r.Names()))
}

// link joins a plugin to the rest of the chain. A compiled pipeline is a
// linked list of links ending at the upstream call: walking it allocates nothing.
type link struct {
	p    Plugin
	next Handler
}

func (l *link) Handle(ctx *fasthttp.RequestCtx, ex *Exchange) error {
	return l.p.Handle(ctx, ex, l.next)
}

// builtPlugin is one plugin as built for a route.
type builtPlugin struct {
	name   string
	parts  Parts
	config any // decoded config, for /admin/config
	source string
}

// chain links the route's plugin parts in the registry's order in front of
// terminal. A part the plugin does not declare is an error of the plugin's
// block (a programming error, reported like a config problem rather than
// crashing a reload).
func (r *Registry) chain(plugins []builtPlugin, terminal Handler, problems *config.Problems) Handler {
	type placed struct {
		rank int
		p    Plugin
	}
	var all []placed
	for _, bp := range plugins {
		f := r.byName[bp.name]
		for part, p := range bp.parts {
			if p == nil || isNilPointer(p) {
				continue
			}
			rank, ok := r.rank[place{f, part}]
			if !ok {
				problems.Addf(bp.source, "plugin %q built a part %q it does not declare (a bug in the plugin)", bp.name, part)
				continue
			}
			all = append(all, placed{rank, p})
		}
	}
	slices.SortFunc(all, func(a, b placed) int { return a.rank - b.rank })
	h := terminal
	for i := len(all) - 1; i >= 0; i-- {
		if c, ok := all[i].p.(Chained); ok {
			c.Chained(h)
		}
		h = &link{p: all[i].p, next: h}
	}
	return h
}

func isNilPointer(p Plugin) bool {
	v := reflect.ValueOf(p)
	return v.Kind() == reflect.Pointer && v.IsNil()
}
