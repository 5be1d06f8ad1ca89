package config

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env"
	"github.com/knadh/koanf/v2"
)

// EnvPrefix starts every environment override: SLUICE_SERVER__LISTEN=:9000
// sets server.listen ("__" separates levels, names are lower-cased).
const EnvPrefix = "SLUICE_"

// Load reads the YAML file at path, applies SLUICE_ environment overrides and
// ${VAR} expansion, decodes strictly (unknown keys are errors) on top of the
// defaults and validates the result. Every problem found is returned in one
// *ConfigError whose entries name their key path. Plugin blocks are checked
// later, when the pipeline is compiled (see Check).
//
// The returned Config is nil only when the file cannot be read or parsed.
func Load(path string) (*Config, error) {
	doc, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, UnwrapPathErr(err))
	}
	k := koanf.New(".")
	if err := k.Load(rawBytes(doc), yaml.Parser()); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	envKeys := map[string]string{} // key path -> variable that set it
	err = k.Load(env.ProviderWithValue(EnvPrefix, ".", func(name, value string) (string, any) {
		rest := strings.TrimPrefix(name, EnvPrefix)
		if !strings.Contains(rest, "__") {
			// SLUICE_ADMIN_TOKEN and the like are values for ${VAR}, not overrides.
			return "", nil
		}
		key := strings.ToLower(strings.ReplaceAll(rest, "__", "."))
		envKeys[key] = name
		return key, value
	}), nil)
	if err != nil {
		return nil, fmt.Errorf("environment overrides: %w", err)
	}
	cfg, err := decodeConfig(k.Raw(), envKeys)
	if abs, absErr := filepath.Abs(path); absErr == nil {
		cfg.fileSums[abs] = sha256.Sum256(doc)
		cfg.dir = filepath.Dir(abs)
	}
	return cfg, err
}

// rawBytes is a koanf provider of a document already read: Load reads the
// file once, so that the hash it records (FileSum) is of what it parsed.
type rawBytes []byte

func (b rawBytes) ReadBytes() ([]byte, error) { return b, nil }

func (b rawBytes) Read() (map[string]any, error) {
	return nil, errors.New("rawBytes needs a parser")
}

// LoadBytes is Load for a YAML document held in memory (used by tests and
// embedders). Environment overrides are not applied; ${VAR} expansion is.
func LoadBytes(doc []byte) (*Config, error) {
	raw, err := yaml.Parser().Unmarshal(doc)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return decodeConfig(raw, nil)
}

func decodeConfig(raw map[string]any, envKeys map[string]string) (*Config, error) {
	var p Problems
	x := &expander{failed: map[string]string{}}
	x.tree(raw, "", &p)

	cfg := DefaultConfig()
	// Before decoding, which reads the secret files: a file that changes
	// meanwhile is seen as changed by the watcher, never as unchanged.
	cfg.secretFiles = secretFilePaths(raw)
	cfg.fileSums = map[string][sha256.Size]byte{}
	for _, path := range cfg.secretFiles {
		if sum, ok := hashFile(path); ok {
			cfg.fileSums[path] = sum
		}
	}
	if err := decodeStrict(raw, cfg); err != nil {
		p.AddErr("", err)
		// A map entry with one bad field is dropped by the decoder; decode the
		// dropped ones again field by field so that the checks below still see
		// them and report everything else that is wrong in one go.
		recoverEntries(raw, "upstreams", &cfg.Upstreams)
		recoverEntries(raw, "routes", &cfg.Routes)
	}
	for name, u := range cfg.Upstreams {
		u.applyDefaults()
		cfg.Upstreams[name] = u
	}
	if cfg.Cluster.Redis != nil {
		cfg.Cluster.Redis.applyDefaults()
	}
	cfg.validate(&p)
	cfg.fromEnv = x.values

	// A value whose ${VAR} failed is reported once, not again as, say, a bad URL.
	if len(x.failed) > 0 {
		kept := p.list[:0]
		for _, fe := range p.list {
			if msg, failed := x.failed[fe.Path]; !failed || fe.Msg == msg {
				kept = append(kept, fe)
			}
		}
		p.list = kept
	}

	cfg.envKeys = envKeys
	cfg.explain(p.list)
	return cfg, p.Err()
}

// Explain adds to each problem of err (a *ConfigError) the environment
// variable that set its key, if one did: a problem found after loading
// (in a plugin block or section, when the pipeline is compiled) reads like
// one found while loading. Other errors are returned as they are.
func (c *Config) Explain(err error) error {
	var ce *ConfigError
	if c != nil && errors.As(err, &ce) {
		c.explain(ce.Problems)
	}
	return err
}

func (c *Config) explain(list []*FieldError) {
	for _, fe := range list {
		for key, name := range c.envKeys {
			if fe.Path == key || strings.HasPrefix(fe.Path, key+".") || strings.HasPrefix(key, fe.Path+".") {
				if suffix := " (set by environment variable " + name + ")"; !strings.HasSuffix(fe.Msg, suffix) {
					fe.Msg += suffix
				}
				break
			}
		}
	}
}

// recoverEntries decodes, leniently, the entries of raw[section] that are
// missing from *dst. Their errors were already reported by the strict pass.
func recoverEntries[V any](raw map[string]any, section string, dst *map[string]V) {
	entries, _ := raw[section].(map[string]any)
	for name, entry := range entries {
		if _, ok := (*dst)[name]; ok {
			continue
		}
		var v V
		dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
			TagName: "koanf", WeaklyTypedInput: true, Result: &v,
			DecodeHook: decodeHooks,
		})
		if err != nil {
			continue
		}
		_ = dec.Decode(entry) // errors already reported; keep whatever decoded
		if *dst == nil {
			*dst = map[string]V{}
		}
		(*dst)[name] = v
	}
}

// DecodeBlock decodes a raw plugin block into dst (a pointer to the plugin's
// Config holding its defaults) with the same strict rules as the main file:
// unknown keys, bad durations and bad sizes are errors with key paths relative
// to the block.
func DecodeBlock(block map[string]any, dst any) error {
	if block == nil {
		block = map[string]any{}
	}
	var p Problems
	p.AddErr("", decodeStrict(block, dst))
	return p.Err()
}

var (
	durationType = reflect.TypeFor[Duration]()
	sizeType     = reflect.TypeFor[Size]()
	secretType   = reflect.TypeFor[Secret]()
)

// decodeStrict decodes input into result (a pointer) and turns mapstructure's
// errors into FieldErrors with dotted key paths.
func decodeStrict(input any, result any) error {
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		TagName:          "koanf",
		ErrorUnused:      true,
		WeaklyTypedInput: true, // environment overrides are strings
		Result:           result,
		DecodeHook:       decodeHooks,
	})
	if err != nil {
		return err
	}
	err = dec.Decode(input)
	if err == nil {
		return nil
	}
	var p Problems
	root := reflect.TypeOf(result).Elem()
	walkDecodeErrors(err, func(de *mapstructure.DecodeError) {
		path := decodePath(de.Name(), root)
		msg := de.Unwrap().Error()
		if keys, ok := strings.CutPrefix(msg, "has invalid keys: "); ok {
			known := knownKeys(root, path)
			for _, key := range strings.Split(keys, ", ") {
				hint := ""
				if known != nil {
					hint = Suggest(key, known)
				}
				p.Add(joinPath(path, key), "unknown key"+hint)
			}
			return
		}
		p.Add(path, cleanDecodeMsg(msg))
	})
	if p.Len() == 0 {
		p.Add("", err.Error())
	}
	return p.Err()
}

func walkDecodeErrors(err error, fn func(*mapstructure.DecodeError)) {
	var de *mapstructure.DecodeError
	if errors.As(err, &de) && !hasJoined(err) {
		fn(de)
		return
	}
	switch e := err.(type) {
	case interface{ Unwrap() []error }:
		for _, x := range e.Unwrap() {
			walkDecodeErrors(x, fn)
		}
	case interface{ Unwrap() error }:
		walkDecodeErrors(e.Unwrap(), fn)
	}
}

// hasJoined reports whether a joined error sits above the first DecodeError in
// err's chain, in which case the walk must descend into each branch.
func hasJoined(err error) bool {
	for err != nil {
		if _, ok := err.(*mapstructure.DecodeError); ok {
			return false
		}
		if _, ok := err.(interface{ Unwrap() []error }); ok {
			return true
		}
		err = errors.Unwrap(err)
	}
	return false
}

// decodePath turns mapstructure's "routes[github].plugins" into
// "routes.github.plugins" and keeps list indexes as "methods[0]"; the root
// type's own name becomes "".
func decodePath(name string, root reflect.Type) string {
	if name == root.String() || name == "" {
		return ""
	}
	var b strings.Builder
	for {
		open := strings.IndexByte(name, '[')
		if open < 0 {
			b.WriteString(name)
			break
		}
		end := strings.IndexByte(name[open:], ']')
		if end < 0 {
			b.WriteString(name)
			break
		}
		b.WriteString(name[:open])
		key := name[open+1 : open+end]
		if _, err := strconv.Atoi(key); err == nil {
			b.WriteString("[" + key + "]")
		} else {
			b.WriteString("." + key)
		}
		name = name[open+end+1:]
	}
	return b.String()
}

// cleanDecodeMsg rewrites mapstructure's type jargon into user words.
func cleanDecodeMsg(msg string) string {
	msg = strings.TrimPrefix(msg, "error decoding: ")
	r := strings.NewReplacer(
		"expected type 'proxy.Duration'", "expected a duration such as \"10s\"",
		"expected type 'proxy.Size'", "expected a size such as \"10MiB\"",
		"expected type 'map[string]interface {}'", "expected a map",
		"expected type 'int'", "expected an integer",
		"expected type 'bool'", "expected true or false",
		"expected type 'string'", "expected a string",
		"cannot parse value as 'int': strconv.ParseInt: invalid syntax", "expected an integer",
		"cannot parse value as 'bool': strconv.ParseBool: invalid syntax", "expected true or false",
		"got unconvertible type", "got",
		"'map[string]interface {}'", "a map",
		"'[]interface {}'", "a list",
		"expected a map or struct", "expected a map",
	)
	return r.Replace(msg)
}

// knownKeys lists the keys allowed at path below root, or nil when any key is
// allowed there (maps with free keys such as plugin blocks).
func knownKeys(root reflect.Type, path string) []string {
	t := root
	if path != "" {
		for _, seg := range strings.Split(path, ".") {
			for t.Kind() == reflect.Pointer {
				t = t.Elem()
			}
			switch t.Kind() {
			case reflect.Struct:
				f, ok := fieldByTag(t, seg)
				if !ok {
					return nil
				}
				t = f.Type
			case reflect.Map:
				t = t.Elem()
			default:
				return nil
			}
		}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	keys := structKeys(t)
	slices.Sort(keys)
	return keys
}

// structKeys lists the keys of a struct, including those of embedded
// structs decoded with ",squash".
func structKeys(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		if squashed(f) {
			keys = append(keys, structKeys(f.Type)...)
		} else if tag := tagName(f); tag != "" {
			keys = append(keys, tag)
		}
	}
	return keys
}

func squashed(f reflect.StructField) bool {
	_, opts, _ := strings.Cut(f.Tag.Get("koanf"), ",")
	return f.Anonymous && f.Type.Kind() == reflect.Struct && strings.Contains(opts, "squash")
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if squashed(f) {
			if inner, ok := fieldByTag(f.Type, name); ok {
				return inner, true
			}
			continue
		}
		if tagName(f) == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func tagName(f reflect.StructField) string {
	tag, _, _ := strings.Cut(f.Tag.Get("koanf"), ",")
	if tag == "-" || !f.IsExported() {
		return ""
	}
	return tag
}

// decodeHooks turn YAML and environment values into config types.
var decodeHooks = mapstructure.ComposeDecodeHookFunc(durationHook, sizeHook, scalarToStringHook, listHook, secretHook)

// scalarToStringHook keeps what the user wrote when a string is expected: an
// unquoted true stays "true" (not "1"), an unquoted 2024-06-01 (a YAML date)
// stays "2024-06-01", a number stays as written.
func scalarToStringHook(_ reflect.Type, to reflect.Type, data any) (any, error) {
	if to.Kind() != reflect.String || to == durationType {
		return data, nil
	}
	switch v := data.(type) {
	case bool:
		return strconv.FormatBool(v), nil
	case int:
		return strconv.Itoa(v), nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case uint64:
		return strconv.FormatUint(v, 10), nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case time.Time:
		if v.Hour() == 0 && v.Minute() == 0 && v.Second() == 0 && v.Nanosecond() == 0 {
			return v.Format("2006-01-02"), nil
		}
		return v.Format(time.RFC3339Nano), nil
	}
	return data, nil
}

// listHook reads "a, b" (an environment override, or a scalar in YAML) as a
// list of trimmed items.
func listHook(from reflect.Type, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to.Kind() != reflect.Slice {
		return data, nil
	}
	var out []string
	for _, item := range strings.Split(data.(string), ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out, nil
}

func durationHook(_ reflect.Type, to reflect.Type, data any) (any, error) {
	if to != durationType {
		return data, nil
	}
	switch v := data.(type) {
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("invalid duration %q: want a number with a unit, such as \"250ms\", \"10s\" or \"1m30s\"", v)
		}
		if d < 0 {
			return nil, fmt.Errorf("invalid duration %q: must not be negative", v)
		}
		return Duration(d), nil
	case int, int64, uint64, float64:
		if reflect.ValueOf(v).IsZero() {
			return Duration(0), nil
		}
		return nil, fmt.Errorf("invalid duration %v: missing unit, write e.g. \"%vs\" or \"%vms\"", v, v, v)
	case Duration:
		return v, nil
	}
	return data, nil
}

func sizeHook(_ reflect.Type, to reflect.Type, data any) (any, error) {
	if to != sizeType {
		return data, nil
	}
	switch v := data.(type) {
	case string:
		return ParseSize(v)
	case int, int64, uint64, float64:
		n := reflect.ValueOf(v).Convert(reflect.TypeFor[float64]()).Float()
		if n < 0 || n != float64(int64(n)) {
			return nil, fmt.Errorf("invalid size %v: want a whole number of bytes or a unit such as \"10MiB\"", v)
		}
		return Size(n), nil
	}
	return data, nil
}

// envValue is a value the config took from the environment by ${VAR}.
// /admin/config shows "${VAR}" in its place: ${VAR} is how secrets reach the
// config. (SLUICE_ overrides are shown as they are; secret fields are
// redacted by their type wherever their value comes from.)
type envValue struct {
	value string
	name  string // the variable, e.g. "GITHUB_TOKEN"
}

// expander replaces ${VAR} references in every string value of a tree, in
// place, and remembers which values came from which variable.
type expander struct {
	values []envValue
	failed map[string]string // key path whose expansion failed -> the problem
}

func (x *expander) tree(node any, path string, p *Problems) any {
	switch v := node.(type) {
	case map[string]any:
		for k, child := range v {
			if k == "" { // no key path could name it: report it as `""`
				p.Add(joinPath(path, `""`), "empty key")
				delete(v, k)
				continue
			}
			v[k] = x.tree(child, joinPath(path, k), p)
		}
	case map[any]any:
		// YAML allows keys that are not strings ("1: x", "? [a]: x", "~: x");
		// the decoder would panic on them. Scalars become their text, like
		// every other key; anything else is a problem at its path.
		m := make(map[string]any, len(v))
		for k, child := range v {
			var name string
			switch k := k.(type) {
			case string:
				if name = k; k == "" {
					p.Add(joinPath(path, `""`), "empty key")
					continue
				}
			case bool, int, int64, uint64, float64:
				name = fmt.Sprint(k)
			default:
				p.Addf(path, "a key must be a string, got %s", describeKey(k))
				continue
			}
			if _, dup := m[name]; dup {
				p.Addf(joinPath(path, name), "duplicate key")
				continue
			}
			m[name] = x.tree(child, joinPath(path, name), p)
		}
		return m
	case []any:
		for i, child := range v {
			v[i] = x.tree(child, fmt.Sprintf("%s[%d]", path, i), p)
		}
	case string:
		out, err := expandEnv(v, func(name, value string) {
			x.values = append(x.values, envValue{value: value, name: name})
		})
		if err != nil {
			p.Add(path, err.Error())
			x.failed[path] = err.Error()
			return v
		}
		return out
	}
	return node
}

func describeKey(k any) string {
	if k == nil {
		return "null"
	}
	return fmt.Sprintf("a %T", k)
}

// expandEnv expands ${VAR}, ${VAR:-default} and $$ in s from the process
// environment, telling seen each variable it used. It fails on an unset VAR
// without default and on an unclosed ${.
func expandEnv(s string, seen func(name, value string)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", fmt.Errorf("unclosed ${ in value")
			}
			expr := s[i+2 : i+2+end]
			name, def, hasDef := strings.Cut(expr, ":-")
			if !validEnvName(name) {
				return "", fmt.Errorf("invalid variable reference ${%s}: want ${NAME} or ${NAME:-default}", expr)
			}
			val, ok := os.LookupEnv(name)
			switch {
			case hasDef && val == "":
				val = def
			case !ok:
				return "", fmt.Errorf("environment variable %s is not set (write ${%s:-} to allow it to be empty)", name, name)
			}
			if seen != nil && val != "" {
				seen(name, val)
			}
			b.WriteString(val)
			i += 2 + end
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (i > 0 && c >= '0' && c <= '9') {
			continue
		}
		return false
	}
	return true
}
