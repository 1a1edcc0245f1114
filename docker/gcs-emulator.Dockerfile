# syntax=docker/dockerfile:1
# gcp-storage-emulator for the local compose stack: the GCS JSON API on port 9023, in memory,
# with the store's bucket created at start.
FROM python:3.11-slim
RUN pip install --no-cache-dir gcp-storage-emulator==2026.7.19
EXPOSE 9023
USER 65534
ENTRYPOINT ["gcp-storage-emulator", "start", "--host", "0.0.0.0", "--port", "9023", "--in-memory"]
CMD ["--default-bucket", "persona-dpo"]
