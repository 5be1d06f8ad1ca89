package testkit

import (
	"os"
	"os/exec"
	"testing"
)

// SkipMissingToolsEnv names the variable that lets tests needing an external
// program (redis-server, prometheus) skip when it is not installed. Without it
// such a test fails: `go test ./...` prints nothing of a passing package, not
// even its skips, so a skip by default would hide that part of the suite
// never ran.
const SkipMissingToolsEnv = "SLUICE_SKIP_MISSING_TOOLS"

// Tool returns the path of the program name on PATH. When it is missing the
// test fails with the Debian package that provides it, or is skipped when
// SLUICE_SKIP_MISSING_TOOLS=1 says the caller knows.
func Tool(t testing.TB, name, debianPackage string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err == nil {
		return bin
	}
	if os.Getenv(SkipMissingToolsEnv) == "1" {
		t.Skipf("%s is not installed; skipped because %s=1", name, SkipMissingToolsEnv)
	}
	t.Fatalf("%s is not installed: this test runs a real one. Install it (Debian/Ubuntu: apt-get install -y %s), "+
		"or set %s=1 to skip the tests that need it", name, debianPackage, SkipMissingToolsEnv)
	return ""
}
