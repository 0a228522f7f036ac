-- A template's body may be any text, not only JSON, when the library caller says so
-- (RequestTemplateInput.contentType): content_type is sent as the request's Content-Type, and a
-- template whose type is not JSON takes any 2xx answer as it comes. NULL is application/json (every
-- template the Batch API stores, and every library template without a contentType).
ALTER TABLE request_templates ADD COLUMN content_type text;
