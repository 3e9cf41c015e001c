# The sisbridge Airflow image: Airflow 3.3 with the pinned stack and the sisbridge package.
FROM apache/airflow:3.3.2-python3.11

USER root
RUN mkdir -p /opt/sisbridge && chown airflow: /opt/sisbridge
USER airflow

COPY --chown=airflow: requirements.txt /opt/sisbridge/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==3.3.2" -r /opt/sisbridge/requirements.txt

COPY --chown=airflow: pyproject.toml README.md /opt/sisbridge/
COPY --chown=airflow: plugins /opt/sisbridge/plugins
RUN pip install --no-cache-dir --no-deps -e /opt/sisbridge

ENV DO_NOT_TRACK=1 \
    SISBRIDGE_HOME=/opt/sisbridge/data \
    SISBRIDGE_SCHOOLS_DIR=/opt/sisbridge/config/schools
