package config

import (
	"embed"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/knadh/koanf/parsers/yaml"
)

// ProfileConfig is a provider profile: the conventions of one provider's
// API (how its errors look and how to render the gateway's errors so that
// its SDK parses them, its quota headers, its auth style) written as plugin
// blocks. The built-in profiles are YAML files in proxy/config/profiles,
// decoded and checked exactly like the ones declared under profiles:.
type ProfileConfig struct {
	// Description says what the profile is for. The blocks are not shown by
	// /admin/config as written (they may hold credentials); each route shows
	// the blocks in force.
	Description string `koanf:"description" json:"description,omitempty"`
	// Plugins are blocks the profile switches on for the upstream's routes.
	// For each plugin, the profile's keys override those of the top-level
	// block and are overridden by those of the upstream's and the route's
	// block; a block there with enabled: false switches it off.
	Plugins PluginBlocks `koanf:"plugins" json:"-"`
	// Defaults are keys filled into a plugin's block only where the config
	// enables that plugin itself (at the top level, on the upstream or on the
	// route): an auth style (inject_auth type) needs the credential the
	// config gives; the block's own keys win.
	Defaults PluginBlocks `koanf:"defaults" json:"-"`
}

//go:embed profiles/*.yaml
var profileFiles embed.FS

var builtinProfiles = sync.OnceValue(func() map[string]ProfileConfig {
	out := map[string]ProfileConfig{}
	entries, _ := profileFiles.ReadDir("profiles")
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".yaml")
		doc, _ := profileFiles.ReadFile(path.Join("profiles", e.Name()))
		pc, err := ParseProfile(doc)
		if err != nil {
			// The files are part of the binary and checked by the tests.
			panic(fmt.Sprintf("config: built-in profile %s: %v", name, err))
		}
		out[name] = pc
	}
	return out
})

// BuiltinProfiles returns the profiles shipped with Sluice, by name.
func BuiltinProfiles() map[string]ProfileConfig { return maps.Clone(builtinProfiles()) }

// ParseProfile decodes one profile written in YAML, strictly, and checks
// its shape (the plugin blocks themselves are checked by the plugins, when
// the pipeline is compiled).
func ParseProfile(doc []byte) (ProfileConfig, error) {
	var pc ProfileConfig
	raw, err := yaml.Parser().Unmarshal(doc)
	if err != nil {
		return pc, err
	}
	if err := decodeStrict(raw, &pc); err != nil {
		return pc, err
	}
	var p Problems
	pc.validate("", &p)
	return pc, p.Err()
}

// Profile returns the profile named name: one declared under profiles:,
// else a built-in one.
func (c *Config) Profile(name string) (ProfileConfig, bool) {
	if pc, ok := c.Profiles[name]; ok {
		return pc, true
	}
	pc, ok := builtinProfiles()[name]
	return pc, ok
}

// ProfileNames lists every profile the config can use, sorted.
func (c *Config) ProfileNames() []string {
	names := slices.Collect(maps.Keys(builtinProfiles()))
	for n := range c.Profiles {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

func (pc *ProfileConfig) validate(key string, p *Problems) {
	join := func(k string) string {
		if key == "" {
			return k
		}
		return key + "." + k
	}
	for _, name := range sortedKeys(pc.Defaults) {
		if _, twice := pc.Plugins[name]; twice {
			p.Addf(join("defaults."+name), "plugin %q is under both plugins and defaults: put it under one", name)
		}
		if _, has := pc.Defaults[name]["enabled"]; has {
			p.Add(join("defaults."+name+".enabled"), "defaults fill keys of blocks the config enables; they cannot switch a plugin on or off")
		}
	}
}

func (c *Config) validateProfiles(p *Problems) {
	for _, name := range sortedKeys(c.Profiles) {
		if !nameRE.MatchString(name) {
			p.Addf("profiles."+name, "invalid name: use lower-case letters, digits, '-' and '_'")
		}
		pc := c.Profiles[name]
		pc.validate("profiles."+name, p)
	}
	for _, name := range sortedKeys(c.Upstreams) {
		u := c.Upstreams[name]
		if u.Profile == "" {
			continue
		}
		if _, ok := c.Profile(u.Profile); !ok {
			known := c.ProfileNames()
			p.Addf("upstreams."+name+".profile", "unknown profile %q%s; known: %s", u.Profile,
				Suggest(u.Profile, known), strings.Join(known, ", "))
		}
	}
}

// MergeBlocks returns base with over's keys laid on top (over wins, key by
// key), as a new map; nil and nil give nil.
func MergeBlocks(base, over map[string]any) map[string]any {
	if base == nil && over == nil {
		return nil
	}
	out := make(map[string]any, len(base)+len(over))
	maps.Copy(out, base)
	maps.Copy(out, over)
	return out
}
