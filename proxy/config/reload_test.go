package config_test

import (
	"crypto/sha256"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/proxy/config"
)

func TestReloadSettings(t *testing.T) {
	t.Parallel()
	cfg, err := config.LoadBytes([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Reload.Watch || cfg.Reload.Debounce.D() != time.Second {
		t.Errorf("reload defaults = %+v, want watch off and debounce 1s", cfg.Reload)
	}
	cfg, err = config.LoadBytes([]byte("reload: {watch: true, debounce: 250ms}\n" + minimal))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Reload.Watch || cfg.Reload.Debounce.D() != 250*time.Millisecond {
		t.Errorf("reload = %+v, want watch on and debounce 250ms", cfg.Reload)
	}

	for _, c := range []struct{ yaml, msg string }{
		{"reload: {debounce: 0s}", "must be between 10ms and 1m0s, got 0s"},
		{"reload: {debounce: 5ms}", "must be between 10ms and 1m0s, got 5ms"},
		{"reload: {debounce: 2m}", "must be between 10ms and 1m0s, got 2m0s"},
		{"reload: {debounce: 1}", "invalid duration 1: missing unit"},
		{"reload: {watch: maybe}", "expected true or false"},
	} {
		key := "reload.debounce"
		if c.msg == "expected true or false" {
			key = "reload.watch"
		}
		testkit.WantOneProblem(t, testkit.ConfigProblems(t, c.yaml+"\n"+minimal), key, c.msg)
	}
	testkit.WantOneProblem(t, testkit.ConfigProblems(t, "reload: {wacth: true}\n"+minimal), "reload.wacth", `did you mean "watch"`)
}

// SecretFiles names the files of "file:" values everywhere in the document:
// the main config (read at load) and plugin blocks (read when compiled),
// including values that came through ${VAR}.
func TestSecretFilesOfAConfig(t *testing.T) {
	dir := t.TempDir()
	admin, key, token, pooled := filepath.Join(dir, "admin"), filepath.Join(dir, "key"), filepath.Join(dir, "token"), filepath.Join(dir, "pooled")
	for _, f := range []string{admin, key, token, pooled} {
		testkit.WriteFile(t, f, "secret-value-0123456789-"+filepath.Base(f))
	}
	t.Setenv("SLUICE_TEST_POOLED_FILE", pooled)
	cfg, err := config.LoadBytes([]byte(`
admin: {token: "file:` + admin + `"}
consumers: {billing: {keys: ["file:` + key + `"]}}
upstreams:
  up:
    url: "http://127.0.0.1:9"
    plugins:
      inject_auth: {type: bearer, keys: ["file:${SLUICE_TEST_POOLED_FILE}"]}
routes:
  r:
    path: "/{p:*}"
    upstream: up
    plugins:
      inject_auth: {type: bearer, token: "file:` + token + `"}
      headers: {request: {set: {X-Note: "file:relative/is/no/secret/file"}}}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{admin, key, pooled, token}
	slices.Sort(want)
	if got := cfg.SecretFiles(); !slices.Equal(got, want) {
		t.Errorf("SecretFiles() = %q, want %q", got, want)
	}
	if got, _ := config.LoadBytes([]byte(minimal)); len(got.SecretFiles()) != 0 {
		t.Errorf("a config without file: values has SecretFiles() = %q", got.SecretFiles())
	}
}

// FileSum is the hash of what Load read: the config file by its absolute
// path, and the secret files.
func TestFileSumsOfALoadedConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	testkit.WriteFile(t, token, "secret-value-0123456789")
	doc := "admin: {token: \"file:" + token + "\"}\n" + minimal
	file := filepath.Join(dir, "sluice.yaml")
	testkit.WriteFile(t, file, doc)
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	for path, content := range map[string]string{file: doc, token: "secret-value-0123456789"} {
		if sum, ok := cfg.FileSum(path); !ok || sum != sha256.Sum256([]byte(content)) {
			t.Errorf("FileSum(%s) = %x, %v; want the hash of its content", path, sum, ok)
		}
	}
	if _, ok := cfg.FileSum(filepath.Join(dir, "other")); ok {
		t.Error("FileSum of a file the config does not name is ok")
	}
}
