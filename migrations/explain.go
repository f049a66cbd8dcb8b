package migrations

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// explain adds the fix to the errors a user can cause.
func explain(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	switch pe.Code {
	case "42501": // insufficient_privilege
		return fmt.Errorf("%w (the role needs CREATE on the database to create the snorky schema: GRANT CREATE ON DATABASE <db> TO <role>)", err)
	}
	return err
}
