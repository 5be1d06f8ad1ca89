package idempotency_test

import (
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
)

func TestMain(m *testing.M) { testkit.RunWithoutLeaks(m) }
