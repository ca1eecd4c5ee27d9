-- edge::write, after the change: the response recorded (status in :status, a body of :body_bytes bytes).
UPDATE idempotency_records
SET status = :status, body = convert_to(repeat('x', :body_bytes), 'UTF8'), response_headers = '{}'
WHERE scope_key = :keys || '-' || :client_id || '-' || :sent;
