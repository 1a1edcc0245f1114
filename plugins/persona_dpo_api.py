"""The DPO microservice's API inside Airflow: a FastAPI app mounted at /persona-dpo in the API server.

Endpoints and auth: `dpo_tasks.orchestration.api`.
"""

from airflow.plugins_manager import AirflowPlugin

from dpo_tasks.orchestration.api import URL_PREFIX, create_app


class PersonaDpoApiPlugin(AirflowPlugin):
    name = "persona_dpo_api"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Persona DPO microservice API"}]
