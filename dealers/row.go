package dealers

import (
	"encoding/json"

	"github.com/snorkyhq/snorky/sync/jsonval"
)

// Row is the data of one delta (a row image), parsed once so that every
// dealer and filter of a model can evaluate it without parsing again. A Row
// is immutable and safe for concurrent reads.
type Row struct {
	root jsonval.Value
}

// NewRow parses row data. It fails only on invalid JSON. Any JSON value is
// accepted; when it is not an object, every field is absent.
func NewRow(data json.RawMessage) (*Row, error) {
	v, err := jsonval.Parse(data)
	if err != nil {
		return nil, err
	}
	return &Row{root: v}, nil
}

// NewRowValid is NewRow for data the caller knows to be valid JSON (a
// json.RawMessage that encoding/json produced, or text the server encoded
// itself): it skips the validation pass. Invalid data gives a wrong row.
func NewRowValid(data json.RawMessage) *Row {
	return &Row{root: jsonval.ParseValid(data)}
}
