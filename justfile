# Trellis tasks. `just --list` shows them all.
# (`just` is `pip install rust-just`; every recipe also works as `scripts/dev ...` or plain cargo.)

# Recipes run the app as a developer's machine does (an app whose APP_ENV
# is unset runs with production's rules).
export APP_ENV := env_var_or_default("APP_ENV", "local")

default:
    @just --list

# Start Postgres/Redis if down, then run the app (all roles) on :8080
run *args:
    scripts/dev run {{args}}

# The whole test suite (starts services and installs test tools if needed)
test *args:
    scripts/dev test {{args}}

# cargo fmt --check and clippy with warnings as errors
lint:
    scripts/dev lint

# Format everything
fmt:
    cargo fmt --all

# Apply database migrations
migrate:
    cargo run -p app -- migrate

# Start local Postgres and Redis if they are down
services:
    scripts/dev services

# Regenerate openapi/openapi.json from the code
openapi:
    cargo run -q -p app -- openapi > openapi/openapi.json

# Print a dev token for a local uid: just dev-token alice
dev-token uid *args:
    cargo run -q -p app -- dev-token --uid {{uid}} {{args}}

# Benchmarks (release build, ~10 min): writes bench/results/<date>.json and .md
bench *args:
    scripts/bench {{args}}

# Faults and bad input against the real processes (release build, ~4 min)
chaos *args:
    scripts/chaos {{args}}

# Check the crate dependency rules
deps:
    cargo test -q -p app --test e2e architecture::

# Regenerate openapi/asyncapi.json (the /ws envelope catalogue) from the code
asyncapi:
    cargo run -q -p app -- asyncapi > openapi/asyncapi.json

# The real Autobahn|Testsuite against /ws (needs a Python 2.7; ~2 min)
autobahn:
    scripts/autobahn
