package config

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// FieldError is one configuration problem at one key path, e.g.
// "routes.github.upstream: unknown upstream \"gthub\"".
type FieldError struct {
	Path string // dotted key path from the top of the file; "" for the file itself
	Msg  string
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// ConfigError lists every problem found in a configuration. Load and Validate
// return it so that `sluice validate` can print all problems, not just the first.
type ConfigError struct {
	Problems []*FieldError
}

func (e *ConfigError) Error() string {
	if len(e.Problems) == 1 {
		return "invalid config: " + e.Problems[0].Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "invalid config: %d problems:", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.Error())
	}
	return b.String()
}

// Problems collects FieldErrors. The zero value is ready to use. Plugin
// Validate methods use it with paths relative to their own block; the loader
// prefixes the block's path.
type Problems struct {
	list []*FieldError
}

// Add records a problem at path.
func (p *Problems) Add(path, msg string) {
	p.list = append(p.list, &FieldError{Path: path, Msg: msg})
}

// Addf records a formatted problem at path.
func (p *Problems) Addf(path, format string, args ...any) {
	p.Add(path, fmt.Sprintf(format, args...))
}

// AddErr records err under prefix. FieldErrors and ConfigErrors inside err keep
// their own paths, joined to prefix; any other error is recorded at prefix.
func (p *Problems) AddErr(prefix string, err error) {
	if err == nil {
		return
	}
	var ce *ConfigError
	if errors.As(err, &ce) {
		for _, fe := range ce.Problems {
			p.Add(joinPath(prefix, fe.Path), fe.Msg)
		}
		return
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		p.Add(joinPath(prefix, fe.Path), fe.Msg)
		return
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			p.AddErr(prefix, e)
		}
		return
	}
	p.Add(prefix, err.Error())
}

// Len is the number of problems recorded.
func (p *Problems) Len() int { return len(p.list) }

// Err returns a *ConfigError holding every problem, sorted by key path and
// without repeats, or nil when there are none.
func (p *Problems) Err() error {
	if len(p.list) == 0 {
		return nil
	}
	list := slices.Clone(p.list)
	slices.SortStableFunc(list, func(a, b *FieldError) int { return strings.Compare(a.Path, b.Path) })
	list = slices.CompactFunc(list, func(a, b *FieldError) bool { return *a == *b })
	return &ConfigError{Problems: list}
}

func joinPath(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "." + b
}
