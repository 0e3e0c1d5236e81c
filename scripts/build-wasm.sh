#!/usr/bin/env bash
# placeholder until the wasm/js harness lands
exit 0
