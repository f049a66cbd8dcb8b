package cdc

import (
	"bytes"
	"encoding/json"

	"github.com/snorkyhq/snorky/sync/jsonval"
)

func jsonUnmarshal(s string, v any) error {
	d := json.NewDecoder(bytes.NewReader([]byte(s)))
	d.UseNumber()
	return d.Decode(v)
}

func jsonMarshalCanonical(v any) (string, error) { return jsonval.CanonicalValue(v) }
