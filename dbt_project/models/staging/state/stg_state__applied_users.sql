with

source as (

    select * from {{ source('state', 'applied_users') }}

),

final as (

    select
        external_id,
        {%- for column in user_columns(exclude=['email_opt_out']) %}
            {% if column in ('email', 'user_login') -%}
                {{ text_key(column) }} as {{ column }},
            {%- else -%}
                {{ column }},
            {%- endif %}
        {%- endfor %}
        email_opt_out as is_email_opt_out,
        applied_run_id

    from source

)

select * from final
