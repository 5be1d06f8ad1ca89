package ratelimit_test

import (
	"testing"

	"github.com/sluice-gw/sluice/proxy/proxytest"
)

func TestMain(m *testing.M) { proxytest.RunWithoutLeaks(m) }
