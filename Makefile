# lunfs: make demo (the main job), make test (the suite), make bench (fio beside the peers),
# make soak (the crash soak: COUNT=N cycles of load, SIGKILL, remount, verify; SEED=S replays).
# Every target installs what it needs on a fresh Debian machine (run as root).

SHELL := /bin/bash
APT_PACKAGES := libfuse2 fuse3 libfuse3-dev pkg-config e2fsprogs
BENCH_APT_PACKAGES := fio qemu-utils qemu-system-common strace
# The drive-failure end-to-end test drives its write load with fio (as issue 4 asks).
TEST_APT_PACKAGES := fio

.PHONY: all deps system-deps build native demo test soak bench clean

all: build

system-deps:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  echo "installing $(APT_PACKAGES)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

deps: system-deps node_modules/.package-lock.json

native: deps
	@npx --no-install node-gyp rebuild --directory native --loglevel=error >/dev/null 2>&1 \
	  && echo "native kernels built (native/build/Release/lunfs_native.node)" \
	  || echo "native kernels NOT built: the TypeScript fallback will be used"
	@npx --no-install node-gyp rebuild --directory native/fuse --loglevel=error >/dev/null 2>&1 \
	  && echo "native FUSE front built (native/fuse/build/Release/lunfs_fuse.node)" \
	  || echo "native FUSE front NOT built (libfuse3-dev missing?): lunfs mount uses fuse-native"

build: deps native
	npx --no-install tsc -p tsconfig.json

demo: build
	bash examples/demo.sh

test: build
	@if ! dpkg -s $(TEST_APT_PACKAGES) >/dev/null 2>&1; then \
	  echo "installing $(TEST_APT_PACKAGES)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEST_APT_PACKAGES) >/dev/null; \
	fi
	@mkdir -p test-results
	@set +e; npx --no-install vitest run --reporter=default --reporter=json --outputFile.json=test-results/vitest.json; status=$$?; \
	  node test/support/print-summary.mjs test-results/vitest.json; exit $$status

# COUNT cycles (default 100) of test/soak/soak.test.ts; a random seed unless SEED is given;
# CLI=0 takes and deletes snapshots through the mount's files only.
COUNT ?= 100
soak: build
	LUNFS_SOAK_CYCLES=$(COUNT) $(if $(SEED),LUNFS_SOAK_SEED=$(SEED)) $(if $(CLI),LUNFS_SOAK_CLI=$(CLI)) npx --no-install vitest run test/soak/soak.test.ts

bench: build
	@if ! dpkg -s $(BENCH_APT_PACKAGES) >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BENCH_APT_PACKAGES) >/dev/null; \
	fi
	bash bench/run.sh

clean:
	rm -rf dist native/build native/fuse/build test-results demo
