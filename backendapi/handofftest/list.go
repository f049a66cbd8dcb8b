package handofftest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// ListOverHTTP is the HandoffFunc of an application's list view at url
// that follows the original Snorky's helpers: a GET with "X-Snorky:
// Subscribe" answers the rows as a JSON array and the subscription token
// in X-Subscription-Token.
func ListOverHTTP(url string) HandoffFunc {
	client := &http.Client{Timeout: 30 * time.Second}
	return func(ctx context.Context) ([]Row, string, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
		if err != nil {
			return nil, "", err
		}
		req.Header.Set("X-Snorky", "Subscribe")
		resp, err := client.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return nil, "", fmt.Errorf("GET %s: %d %.300s", url, resp.StatusCode, body)
		}
		var rows []Row
		if err := json.Unmarshal(body, &rows); err != nil {
			return nil, "", fmt.Errorf("GET %s: %w", url, err)
		}
		return rows, resp.Header.Get("X-Subscription-Token"), nil
	}
}
