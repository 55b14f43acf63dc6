-- ID documents (issue 8): the text read from the card (name, number, birth date), JSON, kept
-- apart from the verdict so retention can clear it and only the relying party's API returns it.
ALTER TABLE sessions ADD COLUMN document_fields TEXT;
